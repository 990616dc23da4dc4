function g = stft_frames(cfg)
%STFT_FRAMES  Window and frame geometry of scipy.signal.ShortTimeFFT, as npvae uses it.
%   G = stft_frames(CFG) for CFG with fields n_fft, hop and window ('hann' or 'hamming',
%   periodic as get_window(..., fftbins=True) makes it). G holds
%     win      n_fft x 1 analysis window
%     dual     n_fft x 1 canonical dual window (win ./ sum of hop-shifted win.^2)
%     mid      floor(n_fft / 2): frame p covers samples p*hop - mid + (0:n_fft-1)
%     p_min    index (<= 0) of the first frame, ShortTimeFFT.p_min
%     p_max    @(n) one past the last frame for n samples, ShortTimeFFT.p_max(n)
%     min_len  ceil(n_fft / 2), the shortest signal (shorter ones are zero-padded)
%   The loops below are scipy's _pre_padding and _post_padding: a frame counts while
%   its window has a non-zero sample inside the signal, so a window with w(1) = 0 (Hann)
%   loses no frame it would otherwise need and gains none.
  n_fft = double(cfg.n_fft);
  hop = double(cfg.hop);
  if hop < 1 || hop > n_fft || n_fft < 1 || hop ~= round(hop) || n_fft ~= round(n_fft)
    error('npvae:badConfig', 'STFT needs integers 1 <= hop <= n_fft, got n_fft %g, hop %g', n_fft, hop);
  end
  switch lower(char(cfg.window))
    case {'hann', 'hanning'}
      a = 0.5;
    case 'hamming'
      a = 0.54;
    otherwise
      error('npvae:badConfig', ['the model''s STFT window ''%s'' has no MATLAB twin here; ', ...
            'npvae_separate knows ''hann'' and ''hamming'''], char(cfg.window));
  end
  % scipy's general_hamming, periodic: M + 1 points from -pi to pi, the last one dropped.
  fac = linspace(-pi, pi, n_fft + 1).';
  win = a + (1 - a) * cos(fac);
  win = win(1:n_fft);
  w2 = win .^ 2;
  dd = w2;
  for k = hop:hop:n_fft - 1
    dd(k + 1:end) = dd(k + 1:end) + w2(1:end - k);
    dd(1:end - k) = dd(1:end - k) + w2(k + 1:end);
  end
  if any(dd < eps * max(dd))
    error('npvae:badConfig', 'STFT with n_fft %d and hop %d cannot be inverted; use a smaller hop', n_fft, hop);
  end
  mid = floor(n_fft / 2);

  % _pre_padding: move the window left until it no longer reaches t >= 0.
  p_min = [];
  n_ = -mid;
  p_ = 0;
  while n_ >= -mid - n_fft
    n_next = n_ - hop;
    if n_next + n_fft <= 0 || all(w2(tail_from(n_next, n_fft)) == 0)
      p_min = -p_;
      break
    end
    n_ = n_next;
    p_ = p_ + 1;
  end
  g = struct('win', win, 'dual', win ./ dd, 'mid', mid, 'p_min', p_min, 'n_fft', n_fft, ...
             'hop', hop, 'min_len', n_fft - mid);
  g.p_max = @(n) post_padding(n, w2, n_fft, hop, mid);
end


function idx = tail_from(k, m)
  % Python's w2[k:] for a negative k (the last -k entries; all of them when -k >= m).
  idx = max(m + k, 0) + 1:m;
end


function p = post_padding(n, w2, n_fft, hop, mid)
  % _post_padding(n)[1]: move the window right until nothing of it overlaps t < n.
  q1 = floor(n / hop);
  k_ = q1 * hop - mid;
  q_ = q1;
  while true
    n_next = k_ + hop;
    if n_next >= n || all(w2(1:min(n - n_next, n_fft)) == 0)
      p = q_ + 1;
      return
    end
    k_ = n_next;
    q_ = q_ + 1;
  end
end
