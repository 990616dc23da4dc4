function files = npvae_show_music(results_file, out_dir, varargin)
%NPVAE_SHOW_MUSIC  Spectrograms, loss curves and WAV files of a music run, or of a separated song.
%
%   FILES = npvae_show_music(MIXTURE, VOCALS, ACCOMPANIMENT, FS, OUT_DIR) shows a song
%   separated by npvae_separate: it writes OUT_DIR/song_spectrograms.png, the magnitude
%   spectrograms (dB re the mixture's peak; channels averaged) of the mixture and the
%   two estimates side by side, and returns its path. MIXTURE, VOCALS, ACCOMPANIMENT are
%   n x channels arrays at FS Hz. Options (name-value pairs) of this form:
%     'play'      true to play the mixture, then the vocals, then the accompaniment
%                 (audioplayer, blocking); without an audio device it warns and goes on
%     'name'      title of the figure and file name prefix (default 'song')
%     'renderer', 'floor_db'  as below
%   Example:
%     [x, fs] = audioread('song.wav');
%     [v, a] = npvae_separate('runs/music_mir1k/model.h5', x, fs);
%     npvae_show_music(x, v, a, fs, 'figures', 'play', true)
%
%   FILES = npvae_show_music(RESULTS_FILE, OUT_DIR) reads the results.h5 that
%   scripts/train_music.py wrote and writes, into OUT_DIR (created if missing), for
%   every example clip CLIP (clip0, clip1, ... in /examples):
%     music_CLIP_spectrograms.png      magnitude spectrograms (dB re the mixture's peak)
%                                      of the mixture, the true and estimated vocals and
%                                      the true and estimated accompaniment
%     CLIP_vocals_hat.wav              the estimated voice         } at the clip's sample
%     CLIP_accompaniment_hat.wav       the estimated accompaniment } rate, 16-bit
%   and once:
%     music_loss_curves.png            training (solid) and validation (dashed) terms per
%                                      epoch, one panel per term, from /history
%   FILES is a cell column of the paths written. It runs headless: figures are drawn
%   with figure('visible', 'off') and print -dpng.
%
%   Options (name-value pairs):
%     'renderer'  'auto' (default), 'figure' or 'raster' (imwrite and a built-in font,
%                 for GNU Octave without a graphics toolkit; 'auto' picks it only there)
%     'floor_db'  lowest level shown in the spectrograms (default -80)
%
%   Example:
%     npvae_show_music('runs/music_mir1k/results.h5', 'figures')

  if isnumeric(results_file)
    files = show_song(results_file, out_dir, varargin{:});
    return
  end

  opts = parse_options(struct('renderer', 'auto', 'floor_db', -80), varargin, 'npvae_show_music');
  [S, info] = npvae_load(results_file, 'music_results');
  if ~isfield(S, 'examples') || ~isfield(S.examples, 'sample_rate')
    error('npvae:badFile', ['npvae_show_music: "%s" lacks /examples/sample_rate and the clip groups; ', ...
          'write it with scripts/train_music.py'], info.path);
  end
  if ~exist(out_dir, 'dir')
    mkdir(out_dir);
  end
  use_figures(opts.renderer);   % checks the option before any work
  sr = double(S.examples.sample_rate);
  hop = [];
  if isfield(S, 'config') && isfield(S.config, 'hop')
    hop = double(S.config.hop);
  end
  panels = {'mixture', 'mixture'; 'vocals', 'true vocals'; 'vocals_hat', 'estimated vocals'; ...
            'accompaniment', 'true accompaniment'; 'accompaniment_hat', 'estimated accompaniment'};
  files = {};
  clips = sort(fieldnames(S.examples));
  clips = clips(~cellfun(@isempty, regexp(clips, '^clip\d+$', 'once')));
  if isempty(clips)
    error('npvae:badFile', 'npvae_show_music: "%s" has no example clips (/examples/clip0, ...)', info.path);
  end
  for k = 1:numel(clips)
    clip = S.examples.(clips{k});
    label = clips{k};
    if isfield(clip, 'name')
      label = clip.name;
    end
    have = cellfun(@(p) isfield(clip, [p '_mag']), panels(:, 1));
    if ~have(1)
      error('npvae:badFile', 'npvae_show_music: %s in "%s" has no mixture_mag', clips{k}, info.path);
    end
    shown = panels(have, :);
    ref = max(double(clip.mixture_mag(:)));
    if ref <= 0
      ref = 1;
    end
    png = fullfile(out_dir, sprintf('music_%s_spectrograms.png', clips{k}));
    db = cell(size(shown, 1), 1);
    for p = 1:size(shown, 1)
      mag = double(clip.([shown{p, 1} '_mag']));            % F x T, frequency down the rows
      db{p} = max(20 * log10(max(mag, 1e-10) / ref), opts.floor_db);
    end
    render_png(png, opts.renderer, @(path) spectrogram_figure(path, db, shown(:, 2), label, sr, hop, opts.floor_db), ...
               @() raster_spectrograms(db, shown(:, 2), label, opts.floor_db));
    files{end + 1, 1} = png;

    for key = {'vocals_hat', 'accompaniment_hat'}
      if isfield(clip, key{1})
        wav = fullfile(out_dir, sprintf('%s_%s.wav', clips{k}, key{1}));
        audiowrite(wav, min(max(double(clip.(key{1})(:)), -1), 1), sr);   % 16-bit PCM clips at +-1
        files{end + 1, 1} = wav;
      end
    end
  end

  if ~isfield(S, 'history')
    error('npvae:badFile', 'npvae_show_music: "%s" has no /history', info.path);
  end
  curves = fullfile(out_dir, 'music_loss_curves.png');
  save_loss_curves(S.history, curves, 'music separation: loss per epoch (train solid, validation dashed)', ...
                   opts.renderer);
  files{end + 1, 1} = curves;
end


function spectrogram_figure(path, db, titles, label, sr, hop, floor_db)
  [f, t] = size(db{1});
  fig = figure('visible', 'off', 'position', [0 0 260 * numel(db), 340]);
  if isempty(hop)
    tx = 1:t;
    xl = 'frame';
  else
    tx = (0:t - 1) * hop / sr;
    xl = 'time (s)';
  end
  fy = linspace(0, sr / 2000, f);
  for p = 1:numel(db)
    subplot(1, numel(db), p);
    imagesc(tx, fy, db{p}, [floor_db 0]);
    axis xy;
    if p == 1
      title(sprintf('%s: %s (dB)', label, titles{p}), 'interpreter', 'none');
    else
      title(titles{p});
    end
    xlabel(xl);
    if p == 1
      ylabel('frequency (kHz)');
    end
  end
  colormap(hot(256));
  print(fig, path, '-dpng', '-r80');
  close(fig);
end


function img = raster_spectrograms(db, titles, label, floor_db)
  % Panels side by side, low frequencies at the bottom, colour map hot.
  ph = 256; pw = 240; gap = 8; top = 40;
  cmap = hot(256);
  img = ones(top + ph + 8, numel(db) * (pw + gap) + gap, 3);
  img = raster_text(img, sprintf('%s (db re mixture peak, %g to 0)', label, floor_db), 4, gap, 2, [0 0 0]);
  for p = 1:numel(db)
    [f, t] = size(db{p});
    rows = max(1, min(f, round(linspace(f, 1, ph))));   % top row = highest frequency
    cols = max(1, min(t, round(linspace(1, t, pw))));
    level = round((db{p}(rows, cols) - floor_db) / -floor_db * 255) + 1;
    level = max(1, min(256, level));
    x0 = gap + (p - 1) * (pw + gap);
    for ch = 1:3
      img(top + (1:ph), x0 + (1:pw), ch) = reshape(cmap(level, ch), ph, pw);
    end
    img = raster_text(img, titles{p}, 24, x0, 1, [0 0 0]);
  end
end


function files = show_song(mixture, vocals, varargin)
  % npvae_show_music(MIXTURE, VOCALS, ACCOMPANIMENT, FS, OUT_DIR, options...)
  if numel(varargin) < 3
    error('npvae:badCall', 'npvae_show_music: call it as npvae_show_music(MIXTURE, VOCALS, ACCOMPANIMENT, FS, OUT_DIR)');
  end
  [accompaniment, fs, out_dir] = varargin{1:3};
  opts = parse_options(struct('renderer', 'auto', 'floor_db', -80, 'play', false, 'name', 'song'), ...
                       varargin(4:end), 'npvae_show_music');
  use_figures(opts.renderer);
  signals = {mixture, vocals, accompaniment};
  titles = {'mixture', 'estimated vocals', 'estimated accompaniment'};
  for k = 1:3
    if ~isnumeric(signals{k}) || isempty(signals{k}) || ~isequal(size(signals{k}), size(mixture))
      error('npvae:shape', 'npvae_show_music: the %s must be a numeric array of the mixture''s size %s, got %s', ...
            titles{k}, mat2str(size(mixture)), mat2str(size(signals{k})));
    end
  end
  if ~isnumeric(fs) || ~isscalar(fs) || fs <= 0
    error('npvae:badRate', 'npvae_show_music: FS must be the sample rate in Hz, got %s', mat2str(fs));
  end
  if ~exist(out_dir, 'dir')
    mkdir(out_dir);
  end
  % About 64 ms frames at any rate (1024 samples at 16 kHz), hop a quarter of that.
  n_fft = 2 ^ round(log2(0.064 * fs));
  cfg = struct('n_fft', n_fft, 'hop', n_fft / 4, 'window', 'hann');
  mags = cell(3, 1);
  for k = 1:3
    x = double(signals{k});
    if isrow(x)
      x = x.';
    end
    mags{k} = abs(npvae_stft(mean(x, 2), cfg));
  end
  ref = max(mags{1}(:));
  if ref <= 0
    ref = 1;
  end
  db = cellfun(@(m) max(20 * log10(max(m, 1e-10) / ref), opts.floor_db), mags, 'UniformOutput', false);
  png = fullfile(out_dir, sprintf('%s_spectrograms.png', opts.name));
  render_png(png, opts.renderer, @(path) spectrogram_figure(path, db, titles, opts.name, fs, cfg.hop, opts.floor_db), ...
             @() raster_spectrograms(db, titles, opts.name, opts.floor_db));
  files = {png};
  if opts.play
    for k = 1:3
      try
        playblocking(audioplayer(min(max(double(signals{k}), -1), 1), fs));
      catch err
        warning('npvae:noAudio', 'npvae_show_music: cannot play the %s (%s)', titles{k}, err.message);
        break
      end
    end
  end
end
