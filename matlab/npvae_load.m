function [S, info] = npvae_load(path, expected_kind)
%NPVAE_LOAD  Read an npvae HDF5 / MAT v7.3 file into a struct, in NumPy's dimension order.
%
%   S = npvae_load(PATH) reads a file written by npvae.h5mat.write_tree.
%   S = npvae_load(PATH, EXPECTED_KIND) also checks the file's kind; EXPECTED_KIND is a
%   char vector ('model', 'mnist_results', 'music_results', 'blind_results') or a cell
%   array of them.
%   [S, INFO] = npvae_load(...) returns INFO.kind, INFO.schema_version and INFO.path.
%
%   Arrays keep NumPy's index order: if Python wrote x with shape (N, 28, 28), then
%   size(S.x) is [N 28 28] and S.x(n, :, :) is x[n-1] in NumPy. 1-D arrays become
%   column vectors, 0-d values scalars, strings char row vectors, lists of strings
%   cell columns, bool arrays logical. Group names are MATLAB names ('encoder.0.W' is
%   stored as encoder_0_W); see docs/hdf5_schema.md.
%
%   In MATLAB the file is read with h5read; in GNU Octave (no h5read) with load.
%   Errors: npvae:fileNotFound, npvae:notHdf5, npvae:notNpvae, npvae:schemaVersion,
%   npvae:wrongKind.

  SCHEMA_VERSION = 1;
  if nargin < 2
    expected_kind = '';
  end
  path = char(path);
  if exist(path, 'file') ~= 2
    error('npvae:fileNotFound', 'npvae_load: file "%s" does not exist; check the path', path);
  end

  if exist('OCTAVE_VERSION', 'builtin') == 0 && exist('h5read') ~= 0
    raw = read_with_h5read(path);
  else
    raw = read_with_load(path);
  end

  kind = utf16_to_char(raw('/npvae_kind'));
  version = double(raw('/npvae_schema_version'));
  if version > SCHEMA_VERSION
    error('npvae:schemaVersion', ['npvae_load: "%s" uses npvae schema version %d, but this ', ...
          'npvae_load reads up to version %d; update npvae'], path, version, SCHEMA_VERSION);
  elseif version < 1
    error('npvae:schemaVersion', 'npvae_load: "%s" has unknown npvae schema version %d', path, version);
  end
  if ~isempty(expected_kind)
    kinds = cellstr(expected_kind);
    if ~any(strcmp(kind, kinds))
      want = strjoin(kinds, ' or ');
      error('npvae:wrongKind', 'npvae_load: expected a %s file, got %s: "%s" holds %s; pass the %s file instead', ...
            want, kind, path, kind, want);
    end
  end

  S = struct();
  manifest = utf16_to_char(raw('/npvae_manifest'));
  if ~isempty(manifest)
    lines = strsplit(manifest, char(10));
    for k = 1:numel(lines)
      parts = strsplit(lines{k}, ' ');
      h5path = parts{1};
      cls = parts{2};
      dims = str2double(parts(4:end));  % NumPy shape; empty for 0-d
      value = fix_value(raw, h5path, cls, dims);
      S = set_path(S, strsplit(h5path(2:end), '/'), value);
    end
  end
  info = struct('kind', kind, 'schema_version', version, 'path', path);
end


function raw = read_with_h5read(path)
  % A function handle from HDF5 path to the dataset as MATLAB stores it (dims reversed).
  try
    h5info(path, '/');
  catch err
    error('npvae:notHdf5', ['npvae_load: "%s" is not a readable HDF5 / MAT v7.3 file ', ...
          '(truncated, corrupt or another format): %s'], path, err.message);
  end
  try
    h5read(path, '/npvae_manifest');
  catch
    error('npvae:notNpvae', ['npvae_load: "%s" is an HDF5 file but not an npvae file ', ...
          '(no /npvae_manifest); pass a file written by npvae'], path);
  end
  raw = @(p) h5read(path, p);
end


function raw = read_with_load(path)
  % Octave: load() reads the HDF5 datasets (not their attributes) into a struct.
  try
    L = load(path);
  catch err
    error('npvae:notHdf5', ['npvae_load: "%s" is not a readable HDF5 / MAT v7.3 file ', ...
          '(truncated, corrupt or another format): %s'], path, err.message);
  end
  if ~isstruct(L) || ~all(isfield(L, {'npvae_kind', 'npvae_schema_version', 'npvae_manifest'}))
    error('npvae:notNpvae', ['npvae_load: "%s" is not an npvae file (no npvae_kind, ', ...
          'npvae_schema_version, npvae_manifest); pass a file written by npvae'], path);
  end
  raw = @(p) get_path(L, strsplit(p(2:end), '/'));
end


function value = fix_value(raw, h5path, cls, dims)
  % Turn one stored dataset into its NumPy-order MATLAB value, as the manifest describes.
  nd = numel(dims);
  switch cls
    case 'struct'
      value = struct();
    case 'char'
      if dims(1) == 0
        value = '';
      else
        value = utf16_to_char(raw(h5path));
      end
    case 'strlist'
      if dims(1) == 0
        value = cell(0, 1);
      else
        value = strsplit(utf16_to_char(raw(h5path)), char(10));
        value = value(:);
      end
    otherwise
      if prod(dims) == 0 && nd > 0
        value = zeros(matlab_dims(dims), dtype_of(cls));  % stored as MATLAB_empty: build it
      else
        value = raw(h5path);
        if nd >= 2
          % Stored C order, so MATLAB holds the reversed shape; reverse the axes back.
          value = permute(reshape(value, fliplr(dims)), nd:-1:1);
        else
          value = reshape(value, matlab_dims(dims));
        end
      end
      if strcmp(cls, 'logical')
        value = logical(value);
      elseif ~isa(value, cls)
        value = cast(value, cls);  % Octave's load reads single datasets as double: exact to undo
      end
  end
end


function s = utf16_to_char(codes)
  % Stored chars are UTF-16 code units. MATLAB's char is UTF-16 too; Octave's is UTF-8,
  % so there non-ASCII text goes through native2unicode.
  codes = reshape(uint16(codes), 1, []);
  if exist('OCTAVE_VERSION', 'builtin') ~= 0 && any(codes > 127)
    s = native2unicode(typecast(codes, 'uint8'), 'UTF-16LE');
  else
    s = char(codes);
  end
end


function d = matlab_dims(dims)
  % MATLAB size of a NumPy shape: 0-d -> 1x1, (n,) -> n x 1, otherwise unchanged.
  if isempty(dims)
    d = [1 1];
  elseif numel(dims) == 1
    d = [dims 1];
  else
    d = dims;
  end
end


function c = dtype_of(cls)
  if strcmp(cls, 'logical')
    c = 'uint8';
  else
    c = cls;
  end
end


function v = get_path(L, parts)
  v = L;
  for k = 1:numel(parts)
    v = v.(parts{k});
  end
end


function S = set_path(S, parts, value)
  if numel(parts) == 1
    S.(parts{1}) = value;
  else
    if isfield(S, parts{1})
      sub = S.(parts{1});
    else
      sub = struct();
    end
    S.(parts{1}) = set_path(sub, parts(2:end), value);
  end
end
