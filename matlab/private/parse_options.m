function opts = parse_options(defaults, args, caller)
%PARSE_OPTIONS  Name-value pairs ARGS over the struct DEFAULTS; unknown names are errors.
  opts = defaults;
  if mod(numel(args), 2) ~= 0
    error('npvae:badOption', '%s: options come as name-value pairs', caller);
  end
  for k = 1:2:numel(args)
    name = lower(char(args{k}));
    if ~isfield(defaults, name)
      error('npvae:badOption', '%s: unknown option ''%s''; known: %s', caller, name, ...
            strjoin(fieldnames(defaults).', ', '));
    end
    opts.(name) = args{k + 1};
  end
end
