function opt = unet_options(spec)
%UNET_OPTIONS  The options of a U-Net spec (npvae/models/options.py), defaults filled in.
%   OPT has norm ('none', 'batch', 'group'), groups, down ('stride', 'max', 'avg'),
%   residual (true/false), dropout (the identity when separating) and norm_bias (whether
%   the convolutions a norm follows have a bias: true for specs written without it).
  opt = struct('norm', 'none', 'groups', 8, 'down', 'stride', 'residual', false, 'dropout', 0, 'norm_bias', true);
  for name = fieldnames(opt)'
    if isfield(spec, name{1})
      opt.(name{1}) = spec.(name{1});
    end
  end
  opt.norm = char(opt.norm);
  opt.down = char(opt.down);
  opt.groups = double(opt.groups);
  opt.residual = logical(opt.residual);
  opt.norm_bias = logical(opt.norm_bias);
  if ~any(strcmp(opt.norm, {'none', 'batch', 'group'})) || ~any(strcmp(opt.down, {'stride', 'max', 'avg'}))
    error('npvae:badSpec', 'unknown U-Net options: norm ''%s'' (none, batch, group), down ''%s'' (stride, max, avg)', ...
          opt.norm, opt.down);
  end
end
