function [digit, fashion, mixture] = npvae_forward(model_file, mixtures)
%NPVAE_FORWARD  Separate digit + fashion mixtures with a trained npvae image model.
%
%   [DIGIT, FASHION, MIXTURE] = npvae_forward(MODEL_FILE, MIXTURES) runs the model
%   stored in MODEL_FILE (a model.h5 or results.h5 written by scripts/train_mnist.py,
%   or the struct npvae_load returns for one) on MIXTURES, an N x 28 x 28 array in
%   [0, 1] (NumPy's order, as in S.examples.mixture). It encodes each mixture to the
%   posterior mean, decodes it and returns the estimated digit and fashion images and
%   the reconstructed mixture, each N x 28 x 28 in the model's class (single for a
%   float32 model). These equal model.separate(mixtures) in Python.
%
%   Models: DenseSeparationVAE, ConvSeparationVAE, UNetSeparationVAE (2 to 5 levels,
%   with its normalisation, pooling, dropout and residual options) and
%   LatentMapSeparationVAE (npvae/models/mnist.py; the last with a 14x14 or 7x7 latent
%   map and its norm option), with the "sources" or "split" output and the "average" or "sum" mixing rule. Blind models (npvae train blind-mnist): npvae_blind_forward.
%
%   Example:
%     S = npvae_load('runs/mnist-dense/results.h5', 'mnist_results');
%     [d, f, m] = npvae_forward(S, S.examples.mixture);
%     imagesc(squeeze(d(1, :, :))); colormap(gray); axis image

  if isstruct(model_file)
    S = model_file;
    where = 'the given struct';
  else
    S = npvae_load(model_file, {'model', 'mnist_results'});
    where = ['"' char(model_file) '"'];
  end
  if ~isfield(S, 'model') || ~isfield(S.model, 'spec') || ~isfield(S.model, 'params')
    error('npvae:notModel', 'npvae_forward: %s holds no /model (spec and params); pass a model.h5 or results.h5', where);
  end
  spec = jsondecode(S.model.spec);
  P = model_params(S.model);
  cls = 'single';
  if isfield(S.model, 'dtype') && strcmp(S.model.dtype, 'float64')
    cls = 'double';
  end

  sz = size(mixtures);
  if numel(sz) == 2 && isequal(sz, [28 28])
    sz = [1 28 28];                                 % a single 28 x 28 image
  end
  if numel(sz) ~= 3 || sz(2) ~= 28 || sz(3) ~= 28
    error('npvae:shape', 'npvae_forward: mixtures must be N x 28 x 28 (NumPy order), got %s', mat2str(size(mixtures)));
  end
  n = sz(1);
  % Rounded to the model's precision first, as Python casts the input to the model's dtype.
  m = double(cast(reshape(mixtures, [n 28 28]), cls));
  x = reshape(m, [n 1 28 28]);                      % inserting a singleton dim moves no data

  switch spec.type
    case 'DenseSeparationVAE'
      logits = dense_vae(spec, P, x);
    case 'ConvSeparationVAE'
      logits = conv_vae(spec, P, x);
    case 'UNetSeparationVAE'
      logits = unet_vae(spec, P, x);
    case 'LatentMapSeparationVAE'
      logits = latent_map_vae(spec, P, x);
    otherwise
      error('npvae:notMnistModel', ['npvae_forward: %s holds a %s; npvae_forward runs the image models ', ...
            '(DenseSeparationVAE, ConvSeparationVAE, UNetSeparationVAE, LatentMapSeparationVAE); ', ...
            'for a BlindSeparationVAE ', ...
            'use npvae_blind_forward'], where, spec.type);
  end

  % The two sources from the decoder's logits (SeparationVAE._sources in Python).
  if strcmp(spec.output, 'sources')
    digit = sigmoid(logits(:, 1, :, :));
    fashion = sigmoid(logits(:, 2, :, :));
  else
    t = total(m, spec.rule);
    lo = max(t - 1, 0);
    hi = min(t, 1);
    digit = lo + sigmoid(reshape(logits, [n 28 28])) .* (hi - lo);
    fashion = t - digit;
  end
  digit = reshape(digit, [n 28 28]);
  fashion = reshape(fashion, [n 28 28]);
  if strcmp(spec.rule, 'average')
    mixture = (digit + fashion) * 0.5;
  else
    mixture = min(max(digit + fashion, 0), 1);
  end
  digit = cast(digit, cls);
  fashion = cast(fashion, cls);
  mixture = cast(mixture, cls);
end


function logits = dense_vae(spec, P, x)
  % DenseSeparationVAE: Flatten, leaky-ReLU Dense layers, Gaussian head, mirrored decoder.
  hidden = reshape(spec.hidden, 1, []);
  widths = [784 hidden];
  enc = {struct('type', 'Flatten')};
  for k = 1:numel(hidden)
    enc{end + 1} = dense(widths(k), widths(k + 1), 'leaky_relu', 0.01);
  end
  back = [spec.latent_dim fliplr(hidden)];
  dec = {};
  for k = 1:numel(hidden)
    dec{end + 1} = dense(back(k), back(k + 1), 'leaky_relu', 0.01);
  end
  s = out_channels(spec);
  dec{end + 1} = dense(back(end), s * 784, 'identity', 0);
  dec{end + 1} = struct('type', 'Reshape', 'shape', [s 28 28]);
  logits = encode_decode(enc, dec, P, x);
end


function logits = conv_vae(spec, P, x)
  % ConvSeparationVAE: two strided convs, Dense, Gaussian head, Dense x 2, two transposed convs.
  c = reshape(spec.channels, 1, []);
  flat = c(2) * 49;
  lrelu = struct('type', 'LeakyReLU', 'alpha', 0.2);
  enc = {conv('Conv2d', 1, c(1), 4, 2, 1), lrelu, conv('Conv2d', c(1), c(2), 4, 2, 1), lrelu, ...
         struct('type', 'Flatten'), dense(flat, spec.hidden, 'leaky_relu', 0.2)};
  dec = {dense(spec.latent_dim, spec.hidden, 'leaky_relu', 0.2), dense(spec.hidden, flat, 'leaky_relu', 0.2), ...
         struct('type', 'Reshape', 'shape', [c(2) 7 7]), conv('ConvTranspose2d', c(2), c(1), 4, 2, 1), lrelu, ...
         conv('ConvTranspose2d', c(1), out_channels(spec), 4, 2, 1)};
  logits = encode_decode(enc, dec, P, x);
end


function logits = encode_decode(enc, dec, P, x)
  h = npvae_layer_forward(struct('type', 'Sequential', 'layers', {enc}), P, 'encoder', x);
  mu = npvae_layer_forward(struct('type', 'GaussianHead'), P, 'head', h);   % z = mu, the posterior mean
  logits = npvae_layer_forward(struct('type', 'Sequential', 'layers', {dec}), P, 'decoder', mu);
end


function logits = unet_vae(spec, P, x)
  % UNetSeparationVAE: conv encoder, Gaussian bottleneck, decoder with skip connections;
  % 2 to 5 levels (sides 28, 14, 7, 3, 1) and the options norm, down, residual (dropout
  % is the identity when separating).
  c = reshape(double(spec.channels), 1, []);
  n = numel(c);
  N = size(x, 1);
  opt = unet_options(spec);
  blocks = 1;                                       % 3x3 convolutions per level (absent: 1)
  if isfield(spec, 'blocks')
    blocks = double(spec.blocks);
  end
  pooled = ~strcmp(opt.down, 'stride');
  sides = 28;
  for i = 2:n
    sides(i) = floor(sides(i - 1) / 2);
  end
  pool = struct('type', 'MaxPool2d', 'kernel_size', 2);
  if strcmp(opt.down, 'avg')
    pool.type = 'AvgPool2d';
  end
  e = cell(1, n);
  h = x;
  for i = 1:n
    if i == 1
      first = conv('Conv2d', 1, c(1), 3, 1, 1);
    elseif pooled
      h = npvae_layer_forward(pool, P, '', h);
      first = conv('Conv2d', c(i - 1), c(i), 3, 1, 1);
    else
      first = conv('Conv2d', c(i - 1), c(i), 4, 2, 1);
    end
    convs = blocks;
    if i == n && ~pooled
      convs = 1;                                    % a strided bottom level: its one convolution
    end
    h = unet_level(P, sprintf('enc%d', i), first, c(i), convs, h, opt);
    e{i} = h;
  end
  run = @(s, name, y) npvae_layer_forward(s, P, name, y);
  mu = run(struct('type', 'GaussianHead'), 'head', run(struct('type', 'Flatten'), '', e{n}));
  bottom = c(n) * sides(n) ^ 2;
  d = run(struct('type', 'Reshape', 'shape', [c(n) sides(n) sides(n)]), '', ...
          run(dense(spec.latent_dim, bottom, 'leaky_relu', 0.2), 'expand', mu));
  for i = n - 1:-1:1
    up = conv('ConvTranspose2d', 2 * c(i + 1), c(i), 4, 2, 1);
    up.output_padding = sides(i) - 2 * sides(i + 1);
    d = unet_level(P, sprintf('up%d', i), up, c(i), blocks, cat(2, d, e{i + 1}), opt);
  end
  logits = run(conv('Conv2d', 2 * c(1) + 1, out_channels(spec), 3, 1, 1), 'out', cat(2, d, e{1}, x));
  logits = reshape(logits, [N size(logits, 2) 28 28]);
end


function y = unet_level(P, level, first, width, convs, x, opt)
  % A level's convolutions <level>, <level>_2, ..., each lrelu(norm(conv)); with the
  % residual option its first convolution's output is added to its last one's.
  h = unet_unit(P, level, first, width, x, opt, 0.2);
  y = h;
  for k = 2:convs
    y = unet_unit(P, sprintf('%s_%d', level, k), conv('Conv2d', width, width, 3, 1, 1), width, y, opt, 0.2);
  end
  if opt.residual && convs > 1
    y = y + h;
  end
end


function logits = latent_map_vae(spec, P, x)
  % LatentMapSeparationVAE: conv encoder down to a 14x14 (2 channel counts) or 7x7 (3)
  % map, a 1x1 conv head giving [mu, logvar] channels, z = mu, and a conv decoder that
  % sees only z. With the norm option every convolution but the head and the output one
  % is followed by its BatchNorm or GroupNorm. The Sequential indices are those of the
  % Python constructor.
  c = reshape(double(spec.channels), 1, []);
  if ~any(numel(c) == [2 3])
    error('npvae:badSpec', 'npvae_forward: LatentMapSeparationVAE channels must be 2 or 3 numbers, got %s', ...
          mat2str(c));
  end
  blocks = 1;                                       % 3x3 convolutions after each resampling (absent: 1)
  if isfield(spec, 'blocks')
    blocks = double(spec.blocks);
  end
  L = double(spec.latent_dim);
  opt = unet_options(spec);
  unit = @(s) latent_map_unit(s, opt);
  conv3 = @(a, b) unit(conv('Conv2d', a, b, 3, 1, 1));
  extra = @(w) repmat(conv3(w, w), 1, blocks);
  enc = conv3(1, c(1));
  for i = 2:numel(c)
    enc = [enc, unit(conv('Conv2d', c(i - 1), c(i), 4, 2, 1)), extra(c(i))];
  end
  dec = [conv3(L, c(end)), extra(c(end))];
  for i = numel(c):-1:2
    dec = [dec, unit(conv('ConvTranspose2d', c(i), c(i - 1), 4, 2, 1))];
    if i > 2
      dec = [dec, extra(c(i - 1))];
    else
      dec = [dec, conv3(c(1), c(1))];                % the last level: one 3x3 conv whatever blocks is
    end
  end
  dec{end + 1} = conv('Conv2d', c(1), out_channels(spec), 3, 1, 1);
  h = npvae_layer_forward(struct('type', 'Sequential', 'layers', {enc}), P, 'encoder', x);
  h = npvae_layer_forward(conv('Conv2d', c(end), 2 * L, 1, 1, 0), P, 'head', h);
  z = h(:, 1:L, :, :);                              % the posterior mean (no sampling)
  logits = npvae_layer_forward(struct('type', 'Sequential', 'layers', {dec}), P, 'decoder', z);
  logits = reshape(logits, [size(x, 1) size(logits, 2) 28 28]);
end


function layers = latent_map_unit(s, opt)
  % A LatentMapSeparationVAE convolution S, its norm (none for opt.norm 'none') and the
  % leaky ReLU, as the layers of its Sequential.
  layers = {s};
  if ~strcmp(opt.norm, 'none')
    layers{1}.bias = opt.norm_bias;
    layers{end + 1} = norm_layer(opt.norm, s.out_channels, opt.groups);
  end
  layers{end + 1} = struct('type', 'LeakyReLU', 'alpha', 0.2);
end


function s = dense(n_in, n_out, act, alpha)
  s = struct('type', 'Dense', 'in_features', n_in, 'out_features', n_out, 'activation', act, 'alpha', alpha);
end


function s = conv(type, c_in, c_out, k, stride, pad)
  s = struct('type', type, 'in_channels', c_in, 'out_channels', c_out, 'kernel_size', k, ...
             'stride', stride, 'padding', pad, 'output_padding', 0);
end


function s = out_channels(spec)
  if strcmp(spec.output, 'sources')
    s = 2;
  else
    s = 1;
  end
end


function t = total(m, rule)
  if strcmp(rule, 'average')
    t = 2 * m;
  else
    t = m;
  end
end


function y = sigmoid(x)
  y = 1 ./ (1 + exp(-x));
end
