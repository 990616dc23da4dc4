function [vocals, accompaniment] = npvae_separate(model_file, audio, fs, varargin)
%NPVAE_SEPARATE  Separate the singing voice from the accompaniment with an npvae music model.
%
%   [VOCALS, ACCOMPANIMENT] = npvae_separate(MODEL_FILE, AUDIO, FS) separates AUDIO,
%   n x channels samples in [-1, 1] at FS Hz (what audioread returns; a vector is one
%   channel; integer samples, as audioread(..., 'native') gives them, are scaled as
%   Python scales them: int16 by 1/32768, int32 by 1/2^31, uint8 as offset binary), with the music model in MODEL_FILE: a model.h5 or results.h5 written by
%   scripts/train_music.py, or the struct npvae_load returns for one. VOCALS and
%   ACCOMPANIMENT have the size of AUDIO (double), at FS Hz. They equal what
%   `npvae separate` (npvae's Separator.separate) writes for the same file with the same
%   options, to about 1e-6 (the network runs here in double, in Python in float32).
%
%   What happens, as in Python:
%     1. the channels are resampled to the model's rate (npvae_resample),
%     2. STFT (npvae_stft, the model's n_fft, hop and window),
%     3. features: compressed magnitudes (log1p or a power law) of all bins but the
%        Nyquist bin, standardised with the model's per-bin mean and std,
%     4. the U-Net VAE (posterior mean, no sampling; any number of levels) gives one
%        sigmoid mask per source, run on chunks of 'chunk_frames' frames with 'context'
%        frames on each side; the Nyquist bin takes the mask of the bin below it (a
%        model of stacked U-Nets runs each on the features and the masks before it);
%        for a stereo song the masks come from the mid signal (the channels' mean) by
%        default, or from every channel on its own ('stereo', 'per-channel'),
%     5. estimates = masks .* each channel's STFT (its phase), back to audio with
%        npvae_istft at the original length, and resampled back to FS,
%     6. when FS is above the model's rate, the band above the model's Nyquist frequency
%        (which it never saw) is shared: the voice takes in each frame the share it has
%        of the top quarter of the band the model sees, the accompaniment the rest
%        ('high_band', 'accompaniment': all of it to the accompaniment); the two add up
%        to the input.

%   Options (name-value pairs):
%     'wiener'        true for Wiener-style (power ratio) masks, as npvae separate --wiener
%                     (default false)
%     'chunk_frames'  STFT frames per network pass, a multiple of 2^levels (8 for the
%                     usual three-level network; default 512, npvae separate's
%                     --chunk-frames); bounds memory for long songs
%     'context'       frames of real input on each side of a chunk, a multiple of
%                     2^levels (default: the model's own, Python's context_frames: 48
%                     for three levels, the receptive-field radius for deeper ones);
%                     with it the results do not depend on the chunking
%     'shifts'        average the masks over this many time shifts of the input, spread
%                     over the model's 2^levels frame phases, as npvae separate --shifts
%                     (default 1: one plain pass; N passes take N times as long)
%     'stereo'        'mid' (default) or 'per-channel', as npvae separate --stereo
%     'high_band'     'mask' (default) or 'accompaniment', as npvae separate --high-band
%
%   Example:
%     [x, fs] = audioread('song.wav');
%     [v, a] = npvae_separate('runs/music_mir1k/model.h5', x, fs);
%     sound(v, fs)

  opts = parse_options(struct('wiener', false, 'chunk_frames', 512, 'context', [], 'shifts', 1, ...
                              'stereo', 'mid', 'high_band', 'mask'), varargin, 'npvae_separate');
  check_choice('stereo', opts.stereo, {'mid', 'per-channel'});
  check_choice('high_band', opts.high_band, {'mask', 'accompaniment'});
  net = load_music_model(model_file);
  d = net.downsample;                               % the model's DOWNSAMPLE, 2^levels
  cf = double(opts.chunk_frames);
  ctx = double(opts.context);
  if isempty(opts.context)
    ctx = net.context;
  end
  if ~isscalar(cf) || ~isscalar(ctx) || cf <= 0 || ctx < 0 || mod(cf, d) || mod(ctx, d)
    error('npvae:badOption', ['npvae_separate: chunk_frames (%s) and context (%s) must be ', ...
          'multiples of %d, chunk_frames positive'], mat2str(opts.chunk_frames), mat2str(opts.context), d);
  end
  shifts = double(opts.shifts);
  if ~isscalar(shifts) || shifts < 1 || shifts ~= round(shifts) || shifts > d
    error('npvae:badOption', ['npvae_separate: shifts (%s) must be a whole number from 1 to %d ', ...
          '(the model''s DOWNSAMPLE, its distinct frame phases)'], mat2str(opts.shifts), d);
  end
  offsets = unique(floor((0:shifts - 1) * d / shifts));   % npvae.separation.separator.shift_offsets
  [chans, row] = check_audio(audio, fs);
  fs = double(fs);
  rate = net.cfg.sample_rate;
  n = size(chans, 1);
  % Python reads audio as float32 and resamples float32 arrays: round where it rounds.
  chans = double(single(chans));
  work = double(single(npvae_resample(chans, fs, rate)));
  n_chans = size(chans, 2);
  wiener = logical(opts.wiener);
  ests = cell(1, n_chans);                          % each n_work x n_sources
  if strcmp(opts.stereo, 'mid') && n_chans == 2
    mid = double(single((work(:, 1) + work(:, 2)) / 2));   % Python's float32 mean
    [Xm, M] = spectra_and_masks(net, mid, wiener, cf, ctx, offsets);
    share = repmat(top_band_share(M(:, :, 1), abs(Xm)), 1, 2);
    for c = 1:2
      ests{c} = waveforms(npvae_stft(work(:, c), net.cfg), M, net.cfg, size(work, 1));
    end
  else
    for c = 1:n_chans
      [X, M] = spectra_and_masks(net, work(:, c), wiener, cf, ctx, offsets);
      share(:, c) = top_band_share(M(:, :, 1), abs(X));
      ests{c} = waveforms(X, M, net.cfg, size(work, 1));
    end
  end
  vocals = zeros(n, n_chans);
  accompaniment = zeros(n, n_chans);
  for c = 1:n_chans
    est = npvae_resample(double(single(ests{c})), rate, fs);
    m = min(n, size(est, 1));
    vocals(1:m, c) = est(1:m, 1);
    accompaniment(1:m, c) = est(1:m, end);
  end
  if fs > rate
    back = npvae_resample(work, rate, fs);
    m = min(n, size(back, 1));
    high = chans(1:m, :) - back(1:m, :);
    if strcmp(opts.high_band, 'mask')
      voice = high .* frame_gains(share, net.cfg, fs, m);
      vocals(1:m, :) = vocals(1:m, :) + voice;
      high = high - voice;
    end
    accompaniment(1:m, :) = accompaniment(1:m, :) + high;
  end
  if row
    vocals = vocals.';
    accompaniment = accompaniment.';
  end
end


function check_choice(name, value, allowed)
  if ~ischar(value) || ~any(strcmp(value, allowed))
    error('npvae:badOption', 'npvae_separate: ''%s'' must be one of %s, got %s', name, ...
          strjoin(strcat('''', allowed, ''''), ', '), mat2str(value));
  end
end


function [chans, row] = check_audio(audio, fs)
  if isinteger(audio)          % audioread(..., 'native'): scaled as npvae.inputs.as_float_audio does
    audio = integer_to_float(audio);
  end
  if ~isnumeric(audio) || ~isreal(audio) || isempty(audio) || ndims(audio) > 2
    error('npvae:badAudio', 'npvae_separate: AUDIO must be a real n x channels array, got a %s %s', ...
          mat2str(size(audio)), class(audio));
  end
  if ~all(isfinite(audio(:)))
    error('npvae:badAudio', 'npvae_separate: AUDIO holds NaN or Inf samples; clean the signal first');
  end
  if ~isnumeric(fs) || ~isscalar(fs) || ~isreal(fs) || fs <= 0 || fs ~= round(fs)
    error('npvae:badRate', 'npvae_separate: FS must be the sample rate in Hz, a positive integer, got %s', mat2str(fs));
  end
  row = isrow(audio) && numel(audio) > 1;
  if row
    audio = audio.';
  end
  chans = double(audio);
end


function x = integer_to_float(audio)
  % Signed integers: full scale 2^(bits-1) -> 1.0; uint8: offset binary, as 8-bit WAV.
  name = class(audio);
  if strcmp(name, 'uint8')
    x = (double(audio) - 128) / 128;
  elseif name(1) == 'u'
    error('npvae:badAudio', ['npvae_separate: AUDIO is %s, not a known sample format; pass samples ', ...
          'scaled to [-1, 1] (audioread''s default double output) or signed integers'], name);
  else
    x = double(audio) / (double(intmax(name)) + 1);
  end
end


function net = load_music_model(model_file)
  % The network, its STFT settings and normaliser from a model / results file or struct.
  if isstruct(model_file)
    S = model_file;
    where = 'the given struct';
  else
    S = npvae_load(model_file, {'model', 'music_results'});
    where = ['"' char(model_file) '"'];
  end
  if ~isfield(S, 'model') || ~isfield(S.model, 'spec') || ~isfield(S.model, 'params')
    error('npvae:notModel', 'npvae_separate: %s holds no /model (spec and params); pass a model.h5 or results.h5', where);
  end
  spec = jsondecode(S.model.spec);
  if ~any(strcmp(spec.type, {'SpectrogramUNetVAE', 'StackedSpectrogramUNetVAE'}))
    error('npvae:notMusicModel', ['npvae_separate: %s holds a %s; npvae_separate runs the music ', ...
          'model (SpectrogramUNetVAE or StackedSpectrogramUNetVAE); for image models use npvae_forward'], ...
          where, spec.type);
  end
  stacks = 1;
  if isfield(spec, 'stacks')
    stacks = double(spec.stacks);
  end
  need = {'sample_rate', 'n_fft', 'hop', 'window'};
  if ~isfield(S, 'config') || ~all(isfield(S.config, need)) || ...
     ~(isfield(S.config, 'normalizer') || isfield(S.config, 'normalizer_dict'))
    error('npvae:badFile', ['npvae_separate: %s lacks the STFT settings or the normaliser in /config ', ...
          '(sample_rate, n_fft, hop, window, normalizer); write it with scripts/train_music.py'], where);
  end
  C = S.config;
  cfg = struct('sample_rate', double(C.sample_rate), 'n_fft', double(C.n_fft), 'hop', double(C.hop), ...
               'window', char(C.window));
  if isfield(C, 'normalizer')
    nz = C.normalizer;
  else
    nz = C.normalizer_dict;
  end
  if ischar(nz)
    nz = jsondecode(nz);
  end
  norm = struct('compression', char(nz.compression), 'power', double(nz.power), ...
                'mean', double(nz.mean(:)), 'std', double(nz.std(:)));
  if ~any(strcmp(norm.compression, {'log', 'power'}))
    error('npvae:badFile', 'npvae_separate: %s has an unknown compression ''%s'' (log or power)', where, norm.compression);
  end
  levels = numel(spec.channels);
  if levels < 2
    error('npvae:badFile', 'npvae_separate: %s holds a SpectrogramUNetVAE with %d level(s); it needs 2 or more', ...
          where, levels);
  end
  d = 2 ^ levels;                                   % SpectrogramUNetVAE.DOWNSAMPLE
  if mod(numel(norm.mean), d)
    error('npvae:badFile', ['npvae_separate: %s: the network sees %d frequency bins, not a multiple of %d ', ...
          '(2^levels, %d levels)'], where, numel(norm.mean), d, levels);
  end
  opt = unet_options(spec);
  if isfield(spec, 'rnn_layers') && spec.rnn_layers > 0 && double(spec.freq_bins) ~= numel(norm.mean)
    error('npvae:badFile', 'npvae_separate: %s: the recurrent bottleneck was built for %d bins, the normaliser has %d', ...
          where, double(spec.freq_bins), numel(norm.mean));
  end
  % SpectrogramUNetVAE.context_frames: at least 48 and the receptive-field radius,
  % rounded up to a multiple of DOWNSAMPLE; stacked U-Nets add theirs up
  per_level = floor(double(spec.kernel_size) / 2) * (1 + 2 * opt.residual) + ~strcmp(opt.down, 'stride');
  radius = 2 * per_level * (d - 1);
  context = stacks * ceil(max(48, radius) / d) * d;
  net = struct('spec', spec, 'params', model_params(S.model), 'cfg', cfg, 'norm', norm, 'downsample', d, ...
               'context', context, 'stacks', stacks);
end


function [X, M] = spectra_and_masks(net, x, wiener, chunk_frames, context, offsets)
  % x : n x 1 at the model's rate. X : its STFT, F x T; M : the masks, F x T x n_sources,
  % averaged over passes on the features delayed by each of `offsets` frames (reflected
  % at the start).
  X = npvae_stft(x, net.cfg);
  mag = abs(X);
  feats = features(net, mag);
  M = 0;
  for o = offsets
    if o == 0
      M = M + masks(net, feats, size(mag, 1), chunk_frames, context);
    else
      if size(feats, 2) > o
        pad = feats(:, o + 1:-1:2);                 % numpy's 'reflect'
      else
        pad = repmat(feats(:, 1), 1, o);            % 'edge', for a mixture shorter than o frames
      end
      m = masks(net, [pad feats], size(mag, 1), chunk_frames, context);
      M = M + m(:, o + 1:end, :);
    end
  end
  M = M / numel(offsets);
  if wiener
    p = (M .* mag) .^ 2;
    M = p ./ (sum(p, 3) + 1e-10);
  end
end


function est = waveforms(X, M, cfg, n)
  % The estimates M .* X as n x n_sources waveforms of n samples.
  S = size(M, 3);
  est = zeros(n, S);
  for s = 1:S
    est(:, s) = npvae_istft(M(:, :, s) .* X, cfg, n);
  end
end


function share = top_band_share(voice_mask, mag)
  % The voice's share of each frame's top band, T x 1 in [0, 1] (0 in a silent frame):
  % sum(m |X|) / sum(|X|) over the bins from 3/4 of the Nyquist frequency up
  % (npvae.separation.separator.top_band_share).
  F = size(mag, 1);
  lo = ceil(0.75 * (F - 1));                        % 0-based, as TOP_BAND in Python
  mag = mag(lo + 1:F, :);
  total = sum(mag, 1);
  voiced = sum(min(max(voice_mask(lo + 1:F, :), 0), 1) .* mag, 1);
  share = zeros(numel(total), 1);
  some = total > 0;
  share(some) = voiced(some) ./ total(some);
  share = double(single(share));
end


function g = frame_gains(values, cfg, fs, n)
  % Per-frame values T x channels as per-sample gains n x channels at FS Hz, linear
  % between frame centres and held beyond the first and last (numpy's interp).
  frames = stft_frames(cfg);
  T = size(values, 1);
  centres = ((0:T - 1).' + frames.p_min) * frames.hop / cfg.sample_rate;
  t = (0:n - 1).' / fs;
  if T == 1
    g = repmat(values, n, 1);
  else
    g = interp1(centres, values, min(max(t, centres(1)), centres(end)), 'linear');
  end
  g = double(single(g));
end


function feats = features(net, mag)
  % The network's input n_bins x T for a mixture magnitude F x T: compressed, standardised.
  nm = net.norm;
  n_bins = numel(nm.mean);
  if n_bins > size(mag, 1)
    error('npvae:badFile', 'npvae_separate: the normaliser has %d bins but the STFT only %d', n_bins, size(mag, 1));
  end
  c = mag(1:n_bins, :);
  if strcmp(nm.compression, 'log')
    c = log1p(c);
  else
    c = c .^ nm.power;
  end
  feats = (c - nm.mean) ./ nm.std;
end


function M = masks(net, feats, F, chunk_frames, context)
  % Soft masks F x T x S for features n_bins x T, the network run chunk by chunk
  % (npvae predict_masks: zero features pad T up to a multiple of 2^levels, each chunk
  % sees `context` real frames on both sides, only its centre is kept; every chunk's
  % input has the same width, a chunk at an edge taking more context on its inner side).
  [n_bins, T] = size(feats);
  d = net.downsample;
  Tp = ceil(T / d) * d;
  x = zeros(n_bins, Tp);
  x(:, 1:T) = feats;
  S = double(net.spec.n_sources);
  out = zeros(F, Tp, S);
  width = min(Tp, chunk_frames + 2 * context);
  for s = 0:chunk_frames:Tp - 1
    e = min(Tp, s + chunk_frames);
    lo = max(0, min(s - context, Tp - width));
    hi = lo + width;
    m = unet_forward(net, x(:, lo + 1:hi));         % n_bins x (hi - lo) x S
    out(1:n_bins, s + 1:e, :) = m(:, s - lo + 1:e - lo, :);
  end
  out(n_bins + 1:F, :, :) = repmat(out(n_bins, :, :), [F - n_bins, 1, 1]);   % the Nyquist bin
  M = out(:, 1:T, :);
end


function m = unet_forward(net, feats)
  % The network on one chunk: feats n_bins x t -> masks n_bins x t x S. A stacked model
  % (StackedSpectrogramUNetVAE) runs U-Net stack1 on the features, every later one on
  % the features and the masks of the one before (1 + S channels); its masks are the last's.
  [f, t] = size(feats);
  x = reshape(feats, [1 1 f t]);
  if net.stacks == 1
    y = hourglass(net.spec, net.params, '', x);
  else
    y = hourglass(net.spec, net.params, 'stack1.', x);
    for k = 2:net.stacks
      y = hourglass(net.spec, net.params, sprintf('stack%d.', k), cat(2, x, y));
    end
  end
  m = permute(reshape(y, [size(y, 2) f t]), [2 3 1]);
end


function y = hourglass(spec, P, pre, h)
  % SpectrogramUNetVAE.forward(x, sample=False): h 1 x C x f x t -> masks 1 x S x f x t, its
  % tensors named PRE + their names (PRE '' for a lone U-Net, 'stack<k>.' in a stacked model).
  % n = numel(channels) levels: enc1..encn (strided convs, or convs and pooling), head (1x1
  % conv to [mu, logvar]), decn from z, dec(k) from [dec(k+1)'s output, enc(k)'s], dec1
  % giving the masks' logits; with the options, a norm after every convolution but the
  % last, a residual block after every level but dec1, and a recurrent bottleneck.
  c = reshape(double(spec.channels), 1, []);
  n = numel(c);
  L = double(spec.latent_channels);
  S = double(spec.n_sources);
  k = double(spec.kernel_size);
  p = floor(k / 2);
  alpha = double(spec.alpha);
  opt = unet_options(spec);
  run = @(s, name, y) npvae_layer_forward(s, P, [pre name], y);
  unit = @(name, s, width, y) unet_unit(P, [pre name], s, width, y, opt, alpha);
  skips = cell(1, n);
  c_in = [size(h, 2) c(1:end - 1)];
  stride = 1 + strcmp(opt.down, 'stride');
  for i = 1:n
    name = sprintf('enc%d', i);
    h = unit(name, conv('Conv2d', c_in(i), c(i), k, stride, p, 0), c(i), h);
    if stride == 1
      pool = struct('type', 'MaxPool2d', 'kernel_size', 2);
      if strcmp(opt.down, 'avg')
        pool.type = 'AvgPool2d';
      end
      h = run(pool, '', h);
    end
    h = residual_block(P, [pre name], c(i), k, h, opt, alpha);
    skips{i} = h;
  end
  if isfield(spec, 'rnn_layers') && spec.rnn_layers > 0
    hid = double(spec.rnn_hidden);
    seq = run(struct('type', 'ToSequence'), '', h);
    seq = run(struct('type', 'Dense', 'in_features', size(seq, 3), 'out_features', hid, 'activation', 'tanh', ...
                     'alpha', 0.01), 'rnn_in', seq);
    seq = run(struct('type', 'LSTM', 'input_size', hid, 'hidden_size', hid / 2, 'num_layers', ...
                     double(spec.rnn_layers), 'bidirectional', true), 'rnn', seq);
    seq = run(struct('type', 'Dense', 'in_features', hid, 'out_features', size(h, 2) * size(h, 3), ...
                     'activation', 'identity', 'alpha', 0.01), 'rnn_out', seq);
    h = h + run(struct('type', 'FromSequence', 'channels', size(h, 2), 'freqs', size(h, 3)), '', seq);
  end
  h = run(conv('Conv2d', c(n), 2 * L, 1, 1, 0, 0), 'head', h);
  z = h(:, 1:L, :, :);                              % the posterior mean (no sampling)
  name = sprintf('dec%d', n);
  h = unit(name, conv('ConvTranspose2d', L, c(n - 1), k, 2, p, 1), c(n - 1), z);
  h = residual_block(P, [pre name], c(n - 1), k, h, opt, alpha);
  for i = n - 1:-1:2
    name = sprintf('dec%d', i);
    h = unit(name, conv('ConvTranspose2d', 2 * c(i), c(i - 1), k, 2, p, 1), c(i - 1), cat(2, h, skips{i}));
    h = residual_block(P, [pre name], c(i - 1), k, h, opt, alpha);
  end
  logits = run(conv('ConvTranspose2d', 2 * c(1), S, k, 2, p, 1), 'dec1', cat(2, h, skips{1}));
  y = npvae_layer_forward(struct('type', 'Sigmoid'), P, '', logits);       % 1 x S x f x t
end


function h = residual_block(P, level, width, k, h, opt, alpha)
  % With the residual option: h + lrelu(norm(conv k x k (h))), layer <level>_res.
  if opt.residual
    name = [level '_res'];
    h = h + unet_unit(P, name, conv('Conv2d', width, width, k, 1, floor(k / 2), 0), width, h, opt, alpha);
  end
end


function s = conv(type, c_in, c_out, k, stride, pad, outpad)
  s = struct('type', type, 'in_channels', c_in, 'out_channels', c_out, 'kernel_size', k, ...
             'stride', stride, 'padding', pad, 'output_padding', outpad);
end
