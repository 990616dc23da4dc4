function tf = use_figures(renderer)
%USE_FIGURES  True to draw with figure/print, false to rasterise directly (imwrite).
%   RENDERER 'figure' or 'raster' forces one; 'auto' draws figures where a graphics toolkit
%   exists: always in MATLAB (also with -nodisplay), in GNU Octave only with one
%   (octave-cli without gnuplot, Qt or FLTK has none, as on headless CI machines).
  switch renderer
    case 'figure'
      tf = true;
    case 'raster'
      tf = false;
    case 'auto'
      tf = exist('OCTAVE_VERSION', 'builtin') == 0 || ~isempty(available_graphics_toolkits());
    otherwise
      error('npvae:badOption', 'renderer must be ''auto'', ''figure'' or ''raster'', got ''%s''', renderer);
  end
end
