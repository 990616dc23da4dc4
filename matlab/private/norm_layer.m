function s = norm_layer(norm, width, groups)
%NORM_LAYER  The layer struct of a model option's normalisation over WIDTH channels:
%   NORM 'batch' (a BatchNorm) or 'group' (a GroupNorm of GROUPS groups at most: the
%   largest divisor of WIDTH up to GROUPS, as npvae.layers.norm.group_count).
  if strcmp(norm, 'batch')
    s = struct('type', 'BatchNorm', 'num_features', width);
  else
    g = max(find(mod(width, 1:min(groups, width)) == 0));
    s = struct('type', 'GroupNorm', 'num_groups', g, 'num_channels', width);
  end
end
