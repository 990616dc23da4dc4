function X = npvae_stft(x, cfg)
%NPVAE_STFT  Short-time Fourier transform, as npvae.audio.stft.stft (scipy's ShortTimeFFT).
%
%   X = npvae_stft(X_SIGNAL, CFG) gives the F x T complex spectrogram of a signal
%   (a vector of n samples). CFG has fields n_fft, hop (samples) and window ('hann' or
%   'hamming'), e.g. S.config from npvae_load on a music model file. F = floor(n_fft/2) + 1
%   bins (0 Hz first), T frames.
%
%   The conventions are scipy.signal.ShortTimeFFT's with phase_shift 0, as npvae uses it:
%   periodic window; frame k (k = 1..T) is centred on sample (k - 1 + p_min) * hop
%   (0-based, p_min = -1 for hop = n_fft/4) and every frame whose window overlaps the
%   signal is kept, the signal zero-padded at both ends; each frame is rotated so its
%   centre is at the FFT's time 0; no scaling (a full-scale sinusoid at a bin centre has
%   magnitude sum(window)/2). Signals shorter than ceil(n_fft/2) are zero-padded to it.
%   npvae_istft inverts it.
%
%   Example:
%     X = npvae_stft(randn(16000, 1), struct('n_fft', 1024, 'hop', 256, 'window', 'hann'));
%     size(X)   % 513 x 66

  if ~isnumeric(x) || ~isreal(x) || ~isvector(x) || isempty(x)
    error('npvae:badAudio', 'npvae_stft: the signal must be a non-empty real vector, got a %s %s', ...
          mat2str(size(x)), class(x));
  end
  g = stft_frames(cfg);
  x = double(x(:));
  if numel(x) < g.min_len
    x(g.min_len) = 0;
  end
  n = numel(x);
  p_max = g.p_max(n);
  T = p_max - g.p_min;
  F = floor(g.n_fft / 2) + 1;
  first = g.p_min * g.hop - g.mid;                  % 0-based sample where frame 1 starts
  last = (p_max - 1) * g.hop - g.mid + g.n_fft;     % one past the end of the last frame
  xp = [zeros(max(-first, 0), 1); x(max(first, 0) + 1:min(last, n)); zeros(max(last - n, 0), 1)];
  rot = [g.mid + 1:g.n_fft, 1:g.mid];               % centre of the window to time 0
  X = complex(zeros(F, T));
  block = 2048;                                     % frames per FFT call: bounds memory
  for t0 = 1:block:T
    t = t0:min(T, t0 + block - 1);
    idx = (1:g.n_fft).' + (t - 1) * g.hop;
    frames = xp(idx) .* g.win;
    spec = fft(frames(rot, :));
    X(:, t) = spec(1:F, :);
  end
end
