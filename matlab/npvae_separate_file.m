function files = npvae_separate_file(model_file, song, out_dir, varargin)
%NPVAE_SEPARATE_FILE  Separate a song file into vocals and accompaniment WAV files.
%
%   FILES = npvae_separate_file(MODEL_FILE, SONG, OUT_DIR) reads SONG (any file audioread
%   reads: WAV, FLAC, ...), separates it with npvae_separate and writes, into OUT_DIR
%   (created if missing),
%     <name>_vocals.wav          } 32-bit float WAV (not clipped) at the song's sample
%     <name>_accompaniment.wav   } rate, channel count and length (<name>: SONG's file
%                                  name without its extension)
%   the names and format `npvae separate` uses, so the two can be compared file for
%   file. FILES is a 2 x 1 cell of the paths written (vocals first). MODEL_FILE is a
%   model.h5 / results.h5 of scripts/train_music.py or the struct npvae_load gives.
%
%   An existing output file is not replaced unless 'overwrite' is true, and SONG itself
%   is never an output. Both checks happen before any work.
%
%   Options (name-value pairs): 'overwrite' (default false), and npvae_separate's
%   'wiener', 'chunk_frames', 'context', 'shifts', 'stereo', 'high_band'.
%
%   Example:
%     npvae_separate_file('runs/music_mir1k/model.h5', 'song.wav', 'separated')

  defaults = struct('overwrite', false, 'wiener', false, 'chunk_frames', 512, 'context', [], ...   % []: the model's
                    'shifts', 1, 'stereo', 'mid', 'high_band', 'mask');
  opts = parse_options(defaults, varargin, 'npvae_separate_file');
  song = char(song);
  out_dir = char(out_dir);
  if exist(song, 'file') ~= 2
    error('npvae:fileNotFound', 'npvae_separate_file: song "%s" does not exist; check the path', song);
  end
  [~, name] = fileparts(song);
  files = {fullfile(out_dir, [name '_vocals.wav']); fullfile(out_dir, [name '_accompaniment.wav'])};
  for k = 1:2
    if same_file(files{k}, song)
      error('npvae:wouldOverwriteInput', ['npvae_separate_file: the output "%s" is the song itself; ', ...
            'choose another OUT_DIR'], files{k});
    end
    if exist(files{k}, 'file') == 2 && ~opts.overwrite
      error('npvae:outputExists', ['npvae_separate_file: "%s" exists; pass ''overwrite'', true to ', ...
            'replace it, or choose another OUT_DIR'], files{k});
    end
  end
  if exist(out_dir, 'dir') ~= 7
    [ok, msg] = mkdir(out_dir);
    if ~ok
      error('npvae:cannotWrite', 'npvae_separate_file: cannot create "%s": %s', out_dir, msg);
    end
  end
  S = model_file;
  if ~isstruct(S)
    S = npvae_load(model_file, {'model', 'music_results'});   % wrong or damaged files fail here, before reading audio
  end
  try
    [audio, fs] = audioread(song);
  catch err
    error('npvae:badAudio', ['npvae_separate_file: cannot read "%s" as audio (%s); convert it to WAV ', ...
          'or FLAC'], song, err.message);
  end
  if isempty(audio)
    error('npvae:badAudio', 'npvae_separate_file: "%s" holds no samples', song);
  end
  [vocals, accompaniment] = npvae_separate(S, audio, fs, 'wiener', opts.wiener, ...
                                           'chunk_frames', opts.chunk_frames, 'context', opts.context, ...
                                           'shifts', opts.shifts, 'stereo', opts.stereo, ...
                                           'high_band', opts.high_band);
  write_float_wav(files{1}, vocals, fs);
  write_float_wav(files{2}, accompaniment, fs);
end


function tf = same_file(a, b)
  tf = strcmp(canonical(a), canonical(b));
end


function p = canonical(p)
  % Absolute path without . and .. (the file need not exist).
  if isempty(regexp(p, '^([A-Za-z]:)?[\\/]', 'once'))
    p = fullfile(pwd, p);
  end
  parts = regexp(p, '[\\/]+', 'split');
  keep = {};
  for k = 1:numel(parts)
    if strcmp(parts{k}, '..') && ~isempty(keep)
      keep(end) = [];
    elseif ~any(strcmp(parts{k}, {'.', '..'}))
      keep{end + 1} = parts{k};
    end
  end
  p = strjoin(keep, '/');
end
