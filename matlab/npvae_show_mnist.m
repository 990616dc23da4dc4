function files = npvae_show_mnist(results_file, out_dir, varargin)
%NPVAE_SHOW_MNIST  Figures of an image run (digit + fashion separation) as PNG files.
%
%   FILES = npvae_show_mnist(RESULTS_FILE, OUT_DIR) reads the results.h5 that
%   scripts/train_mnist.py wrote and writes, into OUT_DIR (created if missing):
%     mnist_grid.png         one column per example pair; rows: mixture, true digit,
%                            estimated digit, true fashion, estimated fashion,
%                            reconstructed mixture
%     mnist_loss_curves.png  training (solid) and validation (dashed) loss terms per
%                            epoch, one panel per term, from /history
%   FILES is a cell column of the paths written. Nothing is shown on screen: figures
%   are drawn with figure('visible', 'off') and print -dpng, so it runs headless.
%
%   Options (name-value pairs):
%     'max_examples'  most example columns in the grid (default 16)
%     'renderer'      'auto' (default), 'figure' or 'raster'. 'raster' writes the PNGs
%                     with imwrite and a built-in font, for GNU Octave without a graphics
%                     toolkit (octave-cli without gnuplot/Qt/FLTK); 'auto' picks it
%                     only there.
%
%   Example:
%     npvae_show_mnist('runs/mnist-dense/results.h5', 'figures')

  opts = parse_options(struct('max_examples', 16, 'renderer', 'auto'), varargin, 'npvae_show_mnist');
  use_figures(opts.renderer);   % checks the option before any work
  [S, info] = npvae_load(results_file, 'mnist_results');
  rows = {'mixture', 'digit', 'digit_hat', 'fashion', 'fashion_hat', 'mixture_hat'};
  titles = {'mixture', 'true digit', 'estimated digit', 'true fashion', 'estimated fashion', ...
            'reconstructed mixture'};
  if ~isfield(S, 'examples') || ~all(isfield(S.examples, rows))
    error('npvae:badFile', ['npvae_show_mnist: "%s" lacks /examples with %s; ', ...
          'write it with scripts/train_mnist.py'], info.path, strjoin(rows, ', '));
  end
  if ~exist(out_dir, 'dir')
    mkdir(out_dir);
  end
  name = 'image separation';
  if isfield(S, 'config') && isfield(S.config, 'model')
    name = [S.config.model ' VAE'];
  end

  % the grid: one montage of 28 x 28 tiles with 2-pixel white gaps
  n = min(size(S.examples.mixture, 1), opts.max_examples);
  gap = 2;
  side = 28 + gap;
  grid = ones(numel(rows) * side + gap, n * side + gap);
  for r = 1:numel(rows)
    images = double(S.examples.(rows{r}));
    for c = 1:n
      grid((r - 1) * side + gap + (1:28), (c - 1) * side + gap + (1:28)) = ...
          min(max(reshape(images(c, :, :), 28, 28), 0), 1);
    end
  end
  grid_png = fullfile(out_dir, 'mnist_grid.png');
  heading = sprintf('%s (%d pairs)', name, n);
  render_png(grid_png, opts.renderer, @(path) grid_figure(path, grid, titles, heading, side, gap), ...
             @() grid_raster(grid, titles, heading, side, gap));

  curves_png = fullfile(out_dir, 'mnist_loss_curves.png');
  if ~isfield(S, 'history')
    error('npvae:badFile', 'npvae_show_mnist: "%s" has no /history', info.path);
  end
  save_loss_curves(S.history, curves_png, sprintf('%s: loss per epoch (train solid, validation dashed)', name), ...
                   opts.renderer);
  files = {grid_png; curves_png};
end


function grid_figure(path, grid, titles, heading, side, gap)
  width = 200 + 1.5 * size(grid, 2);
  fig = figure('visible', 'off', 'position', [0 0 width, 60 + 1.5 * size(grid, 1)]);
  axes('position', [190 / width, 0.02, 1 - 200 / width, 0.88]);
  imagesc(grid, [0 1]);
  colormap(gray(256));
  axis image off;
  for r = 1:numel(titles)
    text(-gap, (r - 1) * side + gap + 14, titles{r}, 'horizontalalignment', 'right', 'fontsize', 8);
  end
  title(heading, 'interpreter', 'none');
  print(fig, path, '-dpng', '-r100');
  close(fig);
end


function img = grid_raster(grid, titles, heading, side, gap)
  scale = 3;
  tile = kron(grid, ones(scale));
  left = 6 * 2 * max(cellfun(@numel, titles)) + 12;
  img = ones(size(tile, 1) + 28, size(tile, 2) + left, 3);
  img(29:end, left + 1:end, :) = repmat(tile, [1 1 3]);
  img = raster_text(img, heading, 6, 6, 2, [0 0 0]);
  for r = 1:numel(titles)
    img = raster_text(img, titles{r}, 28 + ((r - 1) * side + gap + 10) * scale, 6, 2, [0 0 0]);
  end
end
