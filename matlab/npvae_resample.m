function y = npvae_resample(x, fs_in, fs_out)
%NPVAE_RESAMPLE  Change the sample rate, as npvae.audio.io.resample (scipy's resample_poly).
%
%   Y = npvae_resample(X, FS_IN, FS_OUT) resamples the columns of X (n x channels; one
%   channel is a column) from FS_IN Hz to FS_OUT Hz (positive integers) along the first
%   dimension, as npvae resamples along axis 0. Y has ceil(n * FS_OUT / FS_IN) rows;
%   Y = X when the rates are equal.
%
%   The filter is scipy.signal.resample_poly's default: with up/down = FS_OUT/FS_IN
%   reduced by their gcd (44100 -> 16000 is up 160, down 441), a linear-phase low-pass
%   FIR of 20 * max(up, down) + 1 taps, cutoff 1 / max(up, down) of Nyquist, windowed
%   sinc with a Kaiser window (beta 5), scaled to unit DC gain and by up; zeros outside
%   the signal; output samples aligned with the filter's centre. Like npvae (which calls
%   it on float32 audio), the taps are rounded to single precision; the sums are in
%   double. Base MATLAB only (besseli), no Signal Processing Toolbox.
%
%   Example:
%     y = npvae_resample(audioread('song.wav'), 44100, 16000);

  if ~isnumeric(x) || ~isreal(x)
    error('npvae:badAudio', 'npvae_resample: X must be a real numeric array, got %s', class(x));
  end
  check_rate(fs_in, 'FS_IN');
  check_rate(fs_out, 'FS_OUT');
  if fs_in == fs_out
    y = x;
    return
  end
  if ndims(x) > 2
    error('npvae:badAudio', 'npvae_resample: X must be n x channels, got %s', mat2str(size(x)));
  end
  x = double(x);
  g = gcd(fs_in, fs_out);
  up = fs_out / g;
  down = fs_in / g;
  n = size(x, 1);
  n_out = floor(n * up / down) + (mod(n * up, down) > 0);
  h = design_filter(up, down);
  half_len = (numel(h) - 1) / 2;
  n_pre_pad = down - mod(half_len, down);
  n_pre_remove = floor((half_len + n_pre_pad) / down);

  % upfirdn: y(i) = sum_k x(k) * hp(i * down - k * up), hp = [zeros(n_pre_pad) h], i and
  % k 0-based, outputs i = n_pre_remove .. n_pre_remove + n_out - 1. Output i uses the
  % filter phase r = mod(i * down - n_pre_pad, up): taps r, r + up, r + 2 up, ...
  taps = ceil(numel(h) / up);
  y = zeros(n_out, size(x, 2));
  block = max(1, floor(2 ^ 20 / taps));
  for b0 = 0:block:n_out - 1
    i = (b0:min(n_out, b0 + block) - 1).' + n_pre_remove;
    a = i * down - n_pre_pad;
    k_top = floor(a / up);
    j = (a - k_top * up) + up * (0:taps - 1);        % tap index (0-based), rows: outputs
    k = k_top - (0:taps - 1);                        % input index (0-based)
    w = zeros(size(j));
    ok = j < numel(h) & k >= 0 & k < n;
    w(ok) = h(j(ok) + 1);
    k(~ok) = 0;
    for c = 1:size(x, 2)
      xc = x(:, c);
      y(b0 + 1:b0 + numel(i), c) = sum(w .* reshape(xc(k + 1), size(k)), 2);   % size(k): also for one row
    end
  end
end


function h = design_filter(up, down)
  % scipy.signal.firwin(2 * half_len + 1, 1 / max_rate, window=('kaiser', 5.0)) * up.
  max_rate = max(up, down);
  f_c = 1 / max_rate;
  numtaps = 2 * 10 * max_rate + 1;
  alpha = (numtaps - 1) / 2;
  m = (0:numtaps - 1).' - alpha;
  h = f_c * sinc_np(f_c * m);
  beta = 5.0;
  win = besseli(0, beta * sqrt(1 - ((m) / alpha) .^ 2)) / besseli(0, beta);   % symmetric Kaiser
  h = h .* win;
  h = h / sum(h);
  h = double(single(single(h) * up));            % resample_poly casts the taps to x's float32
end


function y = sinc_np(x)
  % numpy.sinc: sin(pi x) / (pi x), 1 at 0.
  t = pi * x;
  t(x == 0) = 1e-20;
  y = sin(t) ./ t;
end


function check_rate(fs, name)
  if ~isnumeric(fs) || ~isscalar(fs) || ~isreal(fs) || fs <= 0 || fs ~= round(fs)
    error('npvae:badRate', 'npvae_resample: %s must be a positive integer sample rate in Hz, got %s', ...
          name, mat2str(fs));
  end
end
