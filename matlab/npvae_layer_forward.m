function [y, y2] = npvae_layer_forward(spec, params, prefix, x)
%NPVAE_LAYER_FORWARD  Forward pass of one npvae layer (or a Sequential of them) in MATLAB.
%
%   Y = npvae_layer_forward(SPEC, PARAMS, PREFIX, X) runs the layer described by SPEC on X.
%   SPEC is a layer specification as Python's Layer.spec() gives it: a struct (e.g.
%   jsondecode(S.model.spec)) or the JSON text itself. PARAMS is the struct of parameters
%   (S.model.params from npvae_load), PREFIX the layer's dotted path in the model
%   ('encoder', 'head', '' for a bare layer); the layer's weight is then
%   PARAMS.(mangled [PREFIX '.W']), e.g. encoder.1.W -> encoder_1_W, 0.W -> x0_W.
%
%   X and Y are in NumPy's dimension order, as npvae_load gives arrays: a batch of
%   images is N x C x H x W, a batch of vectors N x F. The arithmetic is in double.
%   [MU, LOGVAR] = npvae_layer_forward(...) for a GaussianHead.
%
%   Layers: Dense (fused activation relu, leaky_relu, sigmoid, tanh), Conv2d and
%   ConvTranspose2d (PyTorch semantics and weight layouts; "bias": false, no b), ReLU, LeakyReLU, Sigmoid,
%   Tanh, Softplus, Identity, Flatten, Reshape, Sequential, GaussianHead, LSTM and GRU
%   (N x T x F sequences, stacked, bidirectional, zero initial state), ToSequence
%   (N x C x F x T -> N x T x C*F) and FromSequence (its inverse); BatchNorm (eval mode:
%   its buffers running_mean and running_var are in PARAMS beside gamma and beta) and
%   GroupNorm; and in eval mode Dropout (the identity), MaxPool2d, AvgPool2d, Upsample
%   (nearest, bilinear), Residual and Concat. Dense also takes a sequence, N x T x F,
%   every step alike.

  if ischar(spec)
    spec = jsondecode(spec);
  end
  x = double(x);
  y2 = [];
  switch spec.type
    case 'Sequential'
      layers = spec.layers;
      if isstruct(layers)            % jsondecode gives a struct array when all items share fields
        layers = num2cell(layers);
      end
      y = x;
      for k = 1:numel(layers)
        y = npvae_layer_forward(layers{k}, params, join_path(prefix, sprintf('%d', k - 1)), y);
      end
    case 'Dense'
      W = param(params, prefix, 'W');
      b = param(params, prefix, 'b');
      steps = [];
      if ndims(x) == 3                 % a sequence: every step alike
        steps = size(x, 2);
        x = reshape(x, [], size(x, 3));
      end
      if size(x, 2) ~= size(W, 1) || ndims(x) ~= 2
        error('npvae:shape', 'npvae_layer_forward: Dense %s expects N x %d input, got %s', ...
              prefix, size(W, 1), mat2str(size(x)));
      end
      act = field_or(spec, 'activation', 'identity');
      y = activation(x * W + b(:).', act, field_or(spec, 'alpha', 0.01));
      if ~isempty(steps)
        y = reshape(y, [], steps, size(W, 2));
      end
    case 'Conv2d'
      W = param(params, prefix, 'W');
      y = conv2d(x, W, conv_bias(spec, params, prefix, size(W, 1)), pair(spec.stride), pair(spec.padding));
    case 'ConvTranspose2d'
      W = param(params, prefix, 'W');
      y = conv_transpose2d(x, W, conv_bias(spec, params, prefix, size(W, 2)), ...
                           pair(spec.stride), pair(spec.padding), pair(field_or(spec, 'output_padding', 0)));
    case 'ReLU'
      y = activation(x, 'relu', 0);
    case 'LeakyReLU'
      y = activation(x, 'leaky_relu', field_or(spec, 'alpha', 0.01));
    case 'Sigmoid'
      y = activation(x, 'sigmoid', 0);
    case 'Tanh'
      y = activation(x, 'tanh', 0);
    case 'Softplus'
      y = max(x, 0) + log1p(exp(-abs(x)));
    case 'Identity'
      y = x;
    case 'Flatten'
      y = c_reshape(x, [size(x, 1), numel(x) / max(size(x, 1), 1)]);
    case 'Reshape'
      y = c_reshape(x, [size(x, 1), reshape(spec.shape, 1, [])]);
    case {'LSTM', 'GRU'}
      y = recurrent(spec, params, prefix, x);
    case 'ToSequence'
      [n, c, f, t] = size(x);
      y = c_reshape(permute(x, [1 4 2 3]), [n, t, c * f]);
    case 'FromSequence'
      y = permute(c_reshape(x, [size(x, 1), size(x, 2), spec.channels, spec.freqs]), [1 3 4 2]);
    case 'Dropout'
      y = x;                          % eval mode
    case {'MaxPool2d', 'AvgPool2d'}
      k = pair(spec.kernel_size);
      y = pool2d(x, k, pair(field_or(spec, 'stride', k)), pair(field_or(spec, 'padding', 0)), spec.type);
    case 'Upsample'
      y = upsample(x, spec);
    case 'Residual'
      y = npvae_layer_forward(spec.body, params, join_path(prefix, 'body'), x);
      if isfield(spec, 'shortcut') && ~isempty(spec.shortcut)
        y = y + npvae_layer_forward(spec.shortcut, params, join_path(prefix, 'shortcut'), x);
      else
        y = y + x;
      end
    case 'Concat'
      branches = spec.branches;
      if isstruct(branches)
        branches = num2cell(branches);
      end
      outs = cell(1, numel(branches));
      for k = 1:numel(branches)
        outs{k} = npvae_layer_forward(branches{k}, params, join_path(prefix, sprintf('%d', k - 1)), x);
      end
      y = cat(double(field_or(spec, 'axis', 1)) + 1, outs{:});   % NumPy axis a is dimension a + 1
    case 'GaussianHead'
      y = x * param(params, join_path(prefix, 'mu'), 'W') + param(params, join_path(prefix, 'mu'), 'b').';
      y2 = x * param(params, join_path(prefix, 'logvar'), 'W') + param(params, join_path(prefix, 'logvar'), 'b').';
    case 'BatchNorm'                 % eval mode: per-channel affine map of the running statistics
      c = [1 size(x, 2) ones(1, ndims(x) - 2)];
      scale = param(params, prefix, 'gamma') ./ sqrt(param(params, prefix, 'running_var') + field_or(spec, 'eps', 1e-5));
      y = (x - reshape(param(params, prefix, 'running_mean'), c)) .* reshape(scale, c) + ...
          reshape(param(params, prefix, 'beta'), c);
    case 'GroupNorm'                 % statistics per sample and group of consecutive channels
      sz = size(x);
      g = double(spec.num_groups);
      xg = reshape(x, [sz(1), sz(2) / g, g, numel(x) / (sz(1) * sz(2))]);
      mu = mean(mean(xg, 2), 4);
      v = mean(mean((xg - mu) .^ 2, 2), 4);
      c = [1 sz(2) ones(1, numel(sz) - 2)];
      y = reshape((xg - mu) ./ sqrt(v + field_or(spec, 'eps', 1e-5)), sz) .* ...
          reshape(param(params, prefix, 'gamma'), c) + reshape(param(params, prefix, 'beta'), c);
    otherwise
      error('npvae:unknownLayer', 'npvae_layer_forward: no MATLAB forward pass for layer type %s (at %s)', ...
            spec.type, prefix);
  end
end


function p = join_path(prefix, name)
  if isempty(prefix)
    p = name;
  else
    p = [prefix '.' name];
  end
end


function v = param(params, prefix, name)
  % The parameter PREFIX.NAME, stored under its MATLAB name (docs/hdf5_schema.md, "Names").
  key = join_path(prefix, name);
  field = regexprep(key, '[^A-Za-z0-9_]', '_');
  if isempty(regexp(field, '^[A-Za-z]', 'once'))
    field = ['x' field];
  end
  field = field(1:min(end, 63));
  if ~isfield(params, field)
    error('npvae:missingParam', 'npvae_layer_forward: parameter %s (field %s) is not in the file', key, field);
  end
  v = double(params.(field));
end


function b = conv_bias(spec, params, prefix, channels)
  % A convolution's bias PREFIX.b, or zeros for one built with "bias": false (no b in the file).
  if field_or(spec, 'bias', true)
    b = param(params, prefix, 'b');
  else
    b = zeros(channels, 1);
  end
end


function v = field_or(s, name, default)
  if isfield(s, name) && ~isempty(s.(name))
    v = s.(name);
  else
    v = default;
  end
end


function p = pair(v)
  % An int or a pair of ints, as in the Python spec.
  v = double(v(:).');
  if isscalar(v)
    p = [v v];
  else
    p = v(1:2);
  end
end


function y = activation(x, name, alpha)
  switch name
    case 'identity'
      y = x;
    case 'relu'
      y = max(x, 0);
    case 'leaky_relu'
      y = x;
      neg = x <= 0;
      y(neg) = alpha * x(neg);
    case 'sigmoid'
      y = 1 ./ (1 + exp(-x));
    case 'tanh'
      y = tanh(x);
    otherwise
      error('npvae:unknownActivation', 'npvae_layer_forward: unknown activation %s', name);
  end
end


function y = c_reshape(x, shape)
  % NumPy's x.reshape(shape) (C order) on an array held in NumPy index order.
  nd = max(ndims(x), 2);
  y = reshape(permute(x, nd:-1:1), [fliplr(shape) 1]);
  y = permute(y, [numel(shape):-1:1, numel(shape) + 1]);
end


function y = conv2d(x, W, b, stride, pad)
  % Cross-correlation, x: N x C x H x W, W: O x C x kh x kw -> N x O x OH x OW.
  [n, c, h, w] = size(x);
  [o, cw, kh, kw] = size(W);
  if c ~= cw
    error('npvae:shape', 'npvae_layer_forward: Conv2d expects %d input channels, got %d', cw, c);
  end
  xp = zeros(n, c, h + 2 * pad(1), w + 2 * pad(2));
  xp(:, :, pad(1) + (1:h), pad(2) + (1:w)) = x;
  oh = floor((h + 2 * pad(1) - kh) / stride(1)) + 1;
  ow = floor((w + 2 * pad(2) - kw) / stride(2)) + 1;
  xp = permute(xp, [2 1 3 4]);                       % C x N x Hp x Wp
  acc = zeros(o, n * oh * ow);
  for i = 1:kh
    for j = 1:kw
      patch = xp(:, :, i + stride(1) * (0:oh - 1), j + stride(2) * (0:ow - 1));
      acc = acc + W(:, :, i, j) * reshape(patch, c, []);
    end
  end
  y = permute(reshape(acc, [o n oh ow]), [2 1 3 4]) + reshape(b, [1 o 1 1]);
end


function y = conv_transpose2d(x, W, b, stride, pad, outpad)
  % Transposed convolution, x: N x C x H x W, W: C x O x kh x kw -> N x O x OH x OW,
  % OH = (H - 1) * stride - 2 * pad + kh + output_padding.
  [n, c, h, w] = size(x);
  [cw, o, kh, kw] = size(W);
  if c ~= cw
    error('npvae:shape', 'npvae_layer_forward: ConvTranspose2d expects %d input channels, got %d', cw, c);
  end
  oh = (h - 1) * stride(1) - 2 * pad(1) + kh + outpad(1);
  ow = (w - 1) * stride(2) - 2 * pad(2) + kw + outpad(2);
  % Scatter every input pixel's kernel-sized contribution into an unpadded canvas.
  full = zeros(o, n, max((h - 1) * stride(1) + kh, pad(1) + oh), max((w - 1) * stride(2) + kw, pad(2) + ow));
  xc = reshape(permute(x, [2 1 3 4]), c, []);        % C x (N*H*W)
  for i = 1:kh
    for j = 1:kw
      contrib = reshape(W(:, :, i, j).' * xc, [o n h w]);
      rows = i + stride(1) * (0:h - 1);
      cols = j + stride(2) * (0:w - 1);
      full(:, :, rows, cols) = full(:, :, rows, cols) + contrib;
    end
  end
  y = permute(full(:, :, pad(1) + (1:oh), pad(2) + (1:ow)), [2 1 3 4]) + reshape(b, [1 o 1 1]);
end


function y = recurrent(spec, params, prefix, x)
  % LSTM (gates i, f, g, o) or GRU (r, z, n) over x: N x T x F, PyTorch's equations and
  % weight layout (l0.W_ih: G*H x F, ...), zero initial state -> N x T x H*directions.
  hid = double(spec.hidden_size);
  directions = 1 + logical(field_or(spec, 'bidirectional', false));
  [n, t, ~] = size(x);
  seq = x;
  for k = 0:double(field_or(spec, 'num_layers', 1)) - 1
    out = zeros(n, t, hid * directions);
    for d = 0:directions - 1
      cell = sprintf('l%d', k);
      if d
        cell = [cell '_reverse'];
      end
      p = join_path(prefix, cell);
      Whh = param(params, p, 'W_hh');
      bhh = param(params, p, 'b_hh');
      proj = reshape(seq, n * t, []) * param(params, p, 'W_ih').' + reshape(param(params, p, 'b_ih'), 1, []);
      proj = reshape(proj, n, t, []);
      h = zeros(n, hid);
      c = zeros(n, hid);
      steps = 1:t;
      if d
        steps = t:-1:1;
      end
      for s = steps
        z = reshape(proj(:, s, :), n, []);
        a = h * Whh.' + reshape(bhh, 1, []);
        if strcmp(spec.type, 'LSTM')
          z = z + a;
          c = sigmoid(z(:, hid + 1:2 * hid)) .* c + sigmoid(z(:, 1:hid)) .* tanh(z(:, 2 * hid + 1:3 * hid));
          h = sigmoid(z(:, 3 * hid + 1:end)) .* tanh(c);
        else
          r = sigmoid(z(:, 1:hid) + a(:, 1:hid));
          u = sigmoid(z(:, hid + 1:2 * hid) + a(:, hid + 1:2 * hid));
          cand = tanh(z(:, 2 * hid + 1:end) + r .* a(:, 2 * hid + 1:end));
          h = (1 - u) .* cand + u .* h;
        end
        out(:, s, d * hid + (1:hid)) = reshape(h, n, 1, hid);
      end
    end
    seq = out;
  end
  y = seq;
end


function y = sigmoid(x)
  y = 1 ./ (1 + exp(-x));
end


function y = pool2d(x, k, stride, pad, kind)
  % Max or average pooling of N x C x H x W (PyTorch: floor output size, padding counted
  % as -Inf by the max and as zeros by the mean, which divides by kh * kw).
  [n, c, h, w] = size(x);
  if strcmp(kind, 'MaxPool2d')
    fill = -Inf;
  else
    fill = 0;
  end
  xp = fill * ones(n, c, h + 2 * pad(1), w + 2 * pad(2));
  xp(:, :, pad(1) + (1:h), pad(2) + (1:w)) = x;
  oh = floor((h + 2 * pad(1) - k(1)) / stride(1)) + 1;
  ow = floor((w + 2 * pad(2) - k(2)) / stride(2)) + 1;
  y = [];
  for i = 1:k(1)
    for j = 1:k(2)
      v = xp(:, :, i + stride(1) * (0:oh - 1), j + stride(2) * (0:ow - 1));
      if isempty(y)
        y = v;
      elseif fill == 0
        y = y + v;
      else
        y = max(y, v);
      end
    end
  end
  if fill == 0
    y = y / (k(1) * k(2));
  end
end


function y = upsample(x, spec)
  % Nearest or bilinear (align_corners = false) upsampling of N x C x H x W, PyTorch's
  % semantics: output size floor(H * scale_factor) or spec.size.
  [n, c, h, w] = size(x);
  in = [h w];
  if isfield(spec, 'size') && ~isempty(spec.size)
    out = pair(spec.size);
    f = [0 0];                      % no factor: the scale is in / out
  else
    f = pair(field_or(spec, 'scale_factor', 2));
    out = floor(in .* f);
  end
  y = x;
  for d = 1:2
    if strcmp(field_or(spec, 'mode', 'nearest'), 'bilinear')
      y = along(y, bilinear_matrix(in(d), out(d), f(d)), d + 2);
    else
      idx = nearest_index(in(d), out(d), f(d)) + 1;
      if d == 1
        y = y(:, :, idx, :);
      else
        y = y(:, :, :, idx);
      end
    end
  end
end


function idx = nearest_index(n_in, n_out, f)
  % PyTorch's nearest source index (0-based), in single precision as PyTorch computes it.
  if n_out == n_in
    idx = 0:n_out - 1;
  elseif n_out == 2 * n_in
    idx = floor((0:n_out - 1) / 2);
  else
    if f > 0
      scale = single(1 / f);
    else
      scale = single(n_in) / single(n_out);
    end
    idx = min(double(floor(single(0:n_out - 1) * scale)), n_in - 1);
  end
end


function A = bilinear_matrix(n_in, n_out, f)
  % n_out x n_in weights of linear interpolation with align_corners = false.
  if f > 0
    scale = 1 / f;
  else
    scale = n_in / n_out;
  end
  src = max(scale * ((0:n_out - 1) + 0.5) - 0.5, 0);
  i0 = floor(src);
  i1 = i0 + (i0 < n_in - 1);
  w1 = min(max(src - i0, 0), 1);
  A = zeros(n_out, n_in);
  for r = 1:n_out
    A(r, i0(r) + 1) = A(r, i0(r) + 1) + 1 - w1(r);
    A(r, i1(r) + 1) = A(r, i1(r) + 1) + w1(r);
  end
end


function y = along(x, A, dim)
  % A (out x in) applied along dimension DIM of a 4-D array.
  perm = [dim, setdiff(1:4, dim)];
  xp = permute(x, perm);
  sz = size(xp);
  sz(end + 1:4) = 1;
  y = ipermute(reshape(A * reshape(xp, sz(1), []), [size(A, 1), sz(2:4)]), perm);
end
