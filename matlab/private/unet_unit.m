function y = unet_unit(P, name, conv, width, x, opt, alpha)
%UNET_UNIT  A U-Net convolution with its option's normalisation and a leaky ReLU, eval mode:
%   lrelu(norm(conv(x))), the norm's tensors under NAME_norm (none for opt.norm 'none');
%   a convolution a norm follows has a bias only with opt.norm_bias.
  if ~strcmp(opt.norm, 'none')
    conv.bias = opt.norm_bias;
  end
  y = npvae_layer_forward(conv, P, name, x);
  if ~strcmp(opt.norm, 'none')
    y = npvae_layer_forward(norm_layer(opt.norm, width, opt.groups), P, [name '_norm'], y);
  end
  y = npvae_layer_forward(struct('type', 'LeakyReLU', 'alpha', alpha), P, '', y);
end
