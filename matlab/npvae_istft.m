function x = npvae_istft(X, cfg, len)
%NPVAE_ISTFT  Inverse of npvae_stft, as npvae.audio.stft.istft (scipy's ShortTimeFFT.istft).
%
%   X_SIGNAL = npvae_istft(X, CFG, LEN) gives the LEN x 1 signal of the F x T spectrogram X
%   (CFG as for npvae_stft). Frames are inverted with the inverse real FFT (the imaginary
%   parts of the 0 Hz and Nyquist bins are ignored, as numpy's irfft does), multiplied by
%   the canonical dual window and overlap-added, so npvae_istft(npvae_stft(x, cfg), cfg,
%   numel(x)) gives x back to rounding.
%   LEN defaults to the centre of the last frame, (T - 1 + p_min) * hop + 1 samples.

  g = stft_frames(cfg);
  [F, T] = size(X);
  if F ~= floor(g.n_fft / 2) + 1
    error('npvae:shape', 'npvae_istft: spectrogram has %d bins but n_fft %d needs %d', F, g.n_fft, ...
          floor(g.n_fft / 2) + 1);
  end
  if nargin < 3 || isempty(len)
    len = (T - 1 + g.p_min) * g.hop + 1;
  end
  len = double(len);
  k1 = max(len, g.min_len);
  q_max = T + g.p_min;
  if T < g.p_max(g.min_len) - g.p_min || k1 > (q_max - 1) * g.hop + g.n_fft - g.mid
    error('npvae:shape', 'npvae_istft: %d frames are too few for %d samples', T, len);
  end
  q0 = g.p_min;
  q1 = min(g.p_max(k1), q_max);
  frames = q0:q1 - 1;
  % Hermitian completion, then the real part: numpy's irfft (which ignores the imaginary
  % parts of the 0 Hz and Nyquist bins).
  mirror = g.n_fft - F + 1:-1:2;
  rot = [g.n_fft - g.mid + 1:g.n_fft, 1:g.n_fft - g.mid];   % time 0 back to the window's centre
  starts = frames * g.hop - g.mid;                  % 0-based first sample of each frame
  width = max(starts(end) + g.n_fft, k1) - starts(1);
  acc = zeros(width, 1);
  block = 2048;
  for b0 = 1:block:numel(frames)
    b = b0:min(numel(frames), b0 + block - 1);
    cols = frames(b) - g.p_min + 1;
    Y = double(X(:, cols));
    xs = real(ifft([Y; conj(Y(mirror, :))]));
    xs = xs(rot, :) .* g.dual;
    idx = (1:g.n_fft).' + (starts(b) - starts(1));
    acc = acc + accumarray(idx(:), xs(:), [width 1]);
  end
  x = acc(-starts(1) + (1:k1));                     % samples 0 .. k1-1
  x = x(1:len);
end
