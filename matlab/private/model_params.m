function P = model_params(model)
%MODEL_PARAMS  The parameters of an npvae model struct (S.model from npvae_load), as floats.
%
%   P = model_params(S.model) is S.model.params, except that a weight stored as int8
%   codes (a file written by `npvae ship --quantize int8`) is multiplied back by its
%   scales in S.model.param_scales, one per index of its first (NumPy) axis:
%   W = single(q) .* s(:), as npvae.files.quantize.dequantize does.

  P = model.params;
  if ~isfield(model, 'param_scales')
    return;
  end
  names = fieldnames(model.param_scales);
  for k = 1:numel(names)
    name = names{k};
    if ~isfield(P, name) || ~isa(P.(name), 'int8')
      error('npvae:badFile', 'model_params: param_scales names %s, which params does not hold as int8 codes', name);
    end
    s = double(model.param_scales.(name));
    if numel(s) ~= size(P.(name), 1) || any(~isfinite(s(:))) || any(s(:) <= 0)
      error('npvae:badFile', 'model_params: the scales of %s are not one finite positive number per row', name);
    end
    P.(name) = single(double(P.(name)) .* s(:));
  end
end
