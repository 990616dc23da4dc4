function write_float_wav(path, x, fs)
%WRITE_FLOAT_WAV  Write x (n x channels) as a 32-bit IEEE-float WAV file at fs Hz.
%   audiowrite clips float data to [-1, 1] in GNU Octave; separated sources can peak a
%   little above 1 and npvae separate keeps such samples, so the file is written here,
%   unclipped, in the layout libsndfile uses (fmt chunk of 18 bytes, fact chunk). It is
%   written to a temporary name and renamed, so a failure never leaves half a file.
  x = single(x);
  [n, ch] = size(x);
  data_bytes = 4 * n * ch;
  [folder, name] = fileparts(path);
  tmp = fullfile(folder, ['.' name '.partial.wav']);
  fid = fopen(tmp, 'w', 'ieee-le');
  if fid < 0
    error('npvae:cannotWrite', 'cannot write "%s": the folder is missing or not writable', path);
  end
  try
    fwrite(fid, 'RIFF', 'char*1');
    fwrite(fid, 4 + (8 + 18) + (8 + 4) + (8 + data_bytes), 'uint32');
    fwrite(fid, 'WAVE', 'char*1');
    fwrite(fid, 'fmt ', 'char*1');
    fwrite(fid, 18, 'uint32');
    fwrite(fid, [3 ch], 'uint16');                  % WAVE_FORMAT_IEEE_FLOAT
    fwrite(fid, [fs fs * 4 * ch], 'uint32');        % sample rate, bytes per second
    fwrite(fid, [4 * ch 32 0], 'uint16');           % block align, bits, cbSize
    fwrite(fid, 'fact', 'char*1');
    fwrite(fid, [4 n], 'uint32');
    fwrite(fid, 'data', 'char*1');
    fwrite(fid, data_bytes, 'uint32');
    fwrite(fid, x.', 'float32');                    % interleaved: sample by sample
    status = fclose(fid);
  catch err
    fclose(fid);
    delete(tmp);
    rethrow(err);
  end
  if status ~= 0
    delete(tmp);
    error('npvae:cannotWrite', 'cannot write "%s" (disk full?)', path);
  end
  [ok, msg] = movefile(tmp, path, 'f');
  if ~ok
    delete(tmp);
    error('npvae:cannotWrite', 'cannot write "%s": %s', path, msg);
  end
end
