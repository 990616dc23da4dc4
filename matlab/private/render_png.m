function render_png(path, renderer, draw_figure, draw_raster)
%RENDER_PNG  Write the PNG PATH with the graphics toolkit or, without one, by rasterising.
%   DRAW_FIGURE(PATH) draws into an invisible figure and prints it; DRAW_RASTER() returns
%   an RGB (or gray) image for imwrite. RENDERER is 'auto', 'figure' or 'raster' (see
%   use_figures). With 'auto', a toolkit that fails (e.g. Octave's gnuplot without fonts)
%   falls back to the raster image with a warning.
  if use_figures(renderer)
    before = get(0, 'children');
    try
      draw_figure(path);
      return
    catch err
      close(setdiff(get(0, 'children'), before));
      if ~strcmp(renderer, 'auto')
        rethrow(err);
      end
      warning('npvae:figureFailed', 'drawing %s with the graphics toolkit failed (%s); using the built-in renderer', ...
              path, err.message);
    end
  end
  imwrite(draw_raster(), path);
end
