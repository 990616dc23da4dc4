function [groups, remix, masked] = npvae_blind_forward(model_file, mixtures, rule)
%NPVAE_BLIND_FORWARD  Separate mixtures with a blind npvae model (trained on mixtures alone).
%
%   GROUPS = npvae_blind_forward(MODEL_FILE, MIXTURES) runs the BlindSeparationVAE
%   stored in MODEL_FILE (the model.h5 or results.h5 of npvae train blind-mnist, or the
%   struct npvae_load returns for one) on MIXTURES, an N x H x W array in NumPy's order
%   (N x 28 x 28 images in [0, 1], as in S.examples.mixture; a single H x W image is
%   taken as N = 1). The encoder maps each mixture to K latent groups; each group's
%   posterior mean goes through the one shared decoder. GROUPS is N x K x H x W in the
%   model's class (single for a float32 model) and equals model.separate(mixtures) in
%   Python. The groups carry no names: which group holds which source is for you to see
%   (the run's metrics and grid.png match them to the true sources).
%
%   [GROUPS, REMIX, MASKED] = npvae_blind_forward(...) also returns
%     REMIX  (N x H x W): the mixing rule applied to the groups, as the data were made:
%            'average' sum_k y_k / 2, 'sum' min(sum_k y_k, 1), 'additive' sum_k y_k;
%     MASKED (N x K x H x W): the mixture shared between the groups in proportion to
%            them (masks y_k / sum_j y_j times 2 m for 'average', m otherwise): these mix
%            back to the mixture exactly (the "masked" estimates of docs/blind.md).
%   The rule is the run's (S.config.rule; 'additive' for a blind music run);
%   npvae_blind_forward(MODEL_FILE, MIXTURES, RULE) overrides it.
%
%   Example:
%     S = npvae_load('runs/blind-mnist-fashion-average-K2/results.h5', 'blind_results');
%     [g, r] = npvae_blind_forward(S, S.examples.mixture);
%     imagesc(squeeze(g(1, 1, :, :))); colormap(gray); axis image

  if isstruct(model_file)
    S = model_file;
    where = 'the given struct';
  else
    S = npvae_load(model_file, {'model', 'blind_results'});
    where = ['"' char(model_file) '"'];
  end
  if ~isfield(S, 'model') || ~isfield(S.model, 'spec') || ~isfield(S.model, 'params')
    error('npvae:notModel', 'npvae_blind_forward: %s holds no /model (spec and params); pass a model.h5 or results.h5', where);
  end
  spec = jsondecode(S.model.spec);
  if ~strcmp(spec.type, 'BlindSeparationVAE')
    error('npvae:notBlindModel', ['npvae_blind_forward: %s holds a %s, not a BlindSeparationVAE; ', ...
          'use npvae_forward for the supervised image models'], where, spec.type);
  end
  P = model_params(S.model);
  cls = 'single';
  if isfield(S.model, 'dtype') && strcmp(S.model.dtype, 'float64')
    cls = 'double';
  end
  if nargin < 3 || isempty(rule)
    rule = run_rule(S, where);
  end
  rule = char(rule);
  if ~any(strcmp(rule, {'average', 'sum', 'additive'}))
    error('npvae:badOption', 'npvae_blind_forward: rule must be ''average'', ''sum'' or ''additive'', got ''%s''', rule);
  end

  shape = double(reshape(spec.shape, 1, []));
  h = shape(1);
  w = shape(2);
  sz = size(mixtures);
  if numel(sz) == 2 && isequal(sz, [h w])
    sz = [1 h w];                                   % a single image
  end
  if numel(sz) ~= 3 || sz(2) ~= h || sz(3) ~= w
    error('npvae:shape', 'npvae_blind_forward: mixtures must be N x %d x %d (NumPy order), got %s', ...
          h, w, mat2str(size(mixtures)));
  end
  n = sz(1);
  k_groups = double(spec.n_groups);
  latent = double(spec.latent_dim);
  % Rounded to the model's precision first, as Python casts the input to the model's dtype.
  m = double(cast(reshape(mixtures, [n h w]), cls));
  x = m;
  if spec.log_input
    x = log1p(m);
  end

  % Encoder: Flatten, leaky-ReLU (0.2) Dense layers; the Gaussian head gives K * L means.
  hidden = double(reshape(spec.hidden, 1, []));
  widths = [h * w hidden];
  enc = {struct('type', 'Flatten')};
  for k = 1:numel(hidden)
    enc{end + 1} = dense(widths(k), widths(k + 1), 'leaky_relu');
  end
  e = npvae_layer_forward(struct('type', 'Sequential', 'layers', {enc}), P, 'encoder', x);
  mu = npvae_layer_forward(struct('type', 'GaussianHead'), P, 'head', e);   % N x (K * L), z = mu

  % One shared decoder, mirrored widths, applied to each group's code in turn.
  back = [latent fliplr(hidden)];
  dec = {};
  for k = 1:numel(hidden)
    dec{end + 1} = dense(back(k), back(k + 1), 'leaky_relu');
  end
  dec{end + 1} = dense(back(end), h * w, 'identity');
  dec{end + 1} = struct('type', 'Reshape', 'shape', [h w]);
  decoder = struct('type', 'Sequential', 'layers', {dec});
  y = zeros([n k_groups h w]);
  for k = 1:k_groups
    logits = npvae_layer_forward(decoder, P, 'decoder', mu(:, (k - 1) * latent + (1:latent)));
    if strcmp(spec.output, 'sigmoid')
      yk = 1 ./ (1 + exp(-logits));
    else
      yk = max(logits, 0) + log1p(exp(-abs(logits)));   % softplus
    end
    y(:, k, :, :) = reshape(yk, [n 1 h w]);
  end

  total = reshape(sum(y, 2), [n h w]);
  switch rule
    case 'average'
      remix = total / 2;
      whole = 2 * m;
    case 'sum'
      remix = min(max(total, 0), 1);
      whole = m;
    otherwise
      remix = total;
      whole = m;
  end
  masked = y ./ max(sum(y, 2), 1e-6) .* reshape(whole, [n 1 h w]);
  groups = cast(y, cls);
  remix = cast(remix, cls);
  masked = cast(masked, cls);
end


function rule = run_rule(S, where)
  % The mixing rule the model was trained with, from the file's /config.
  rule = '';
  if isfield(S, 'config') && isstruct(S.config)
    if isfield(S.config, 'rule')
      rule = S.config.rule;
    elseif isfield(S.config, 'mode') && strcmp(S.config.mode, 'blind_music')
      rule = 'additive';
    end
  end
  if isempty(rule)
    error('npvae:noRule', ['npvae_blind_forward: %s does not say which mixing rule the model was trained ', ...
          'with; pass it: npvae_blind_forward(file, mixtures, ''average'')'], where);
  end
end


function s = dense(n_in, n_out, act)
  s = struct('type', 'Dense', 'in_features', n_in, 'out_features', n_out, 'activation', act, 'alpha', 0.2);
end
