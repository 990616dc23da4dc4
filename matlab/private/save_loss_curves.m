function save_loss_curves(history, path, title_text, renderer)
%SAVE_LOSS_CURVES  PNG of the per-epoch training (solid) and validation (dashed) terms.
%   HISTORY is the /history struct of a results file: epoch and train_<term>, val_<term>
%   columns. One panel per term. FIGURES: draw with figure/print (true) or rasterise (false).
  if ~isfield(history, 'epoch')
    error('npvae:badFile', 'the results file has no /history/epoch: it was not written by a training run');
  end
  epoch = double(history.epoch(:));
  names = fieldnames(history);
  skip = {'seconds', 'beta', 'lr', 'kl_weight'};
  terms = {};
  for k = 1:numel(names)
    tok = regexp(names{k}, '^(train|val)_(.+)$', 'tokens', 'once');
    if ~isempty(tok) && ~any(strcmp(tok{2}, [terms skip])) && numel(history.(names{k})) == numel(epoch)
      terms{end + 1} = tok{2};
    end
  end
  if isempty(terms)
    error('npvae:badFile', 'the results file''s /history has no train_<term> or val_<term> columns');
  end
  ncol = min(4, numel(terms));
  nrow = ceil(numel(terms) / ncol);
  render_png(path, renderer, @(p) curves_figure(p, history, epoch, terms, title_text, nrow, ncol), ...
             @() curves_raster(history, epoch, terms, title_text, nrow, ncol));
end


function curves_figure(path, history, epoch, terms, title_text, nrow, ncol)
  % (no overall heading: MATLAB's sgtitle does not exist in Octave 7; the legends say it)
  splits = {'train', 'val'};
  colors = [0.12 0.47 0.71; 1.0 0.5 0.05];
  fig = figure('visible', 'off', 'position', [0 0 300 * ncol, 250 * nrow + 40]);
  for k = 1:numel(terms)
    subplot(nrow, ncol, k);
    hold on;
    labels = {};
    for s = 1:2
      name = [splits{s} '_' terms{k}];
      if isfield(history, name)
        style = '-';
        if s == 2
          style = '--';
        end
        plot(epoch, double(history.(name)(:)), style, 'color', colors(s, :), 'marker', '.');
        labels{end + 1} = splits{s};
      end
    end
    hold off;
    title(strrep(terms{k}, '_', ' '));
    xlabel('epoch');
    legend(labels);
    grid on;
  end
  print(fig, path, '-dpng', '-r80');
  close(fig);
end


function img = curves_raster(history, epoch, terms, title_text, nrow, ncol)
  splits = {'train', 'val'};
  colors = [0.12 0.47 0.71; 1.0 0.5 0.05];
  ph = 200; pw = 300;
  img = ones(nrow * ph + 24, ncol * pw, 3);
  img = raster_text(img, title_text, 4, 8, 2, [0 0 0]);
  for k = 1:numel(terms)
    ys = {};
    styles = struct('color', {}, 'dashed', {}, 'label', {});
    for s = 1:2
      name = [splits{s} '_' terms{k}];
      if isfield(history, name)
        ys{end + 1} = history.(name);
        styles(end + 1) = struct('color', colors(s, :), 'dashed', s == 2, 'label', splits{s});
      end
    end
    r = floor((k - 1) / ncol); c = mod(k - 1, ncol);
    img(24 + r * ph + (1:ph), c * pw + (1:pw), :) = raster_plot(epoch, ys, styles, terms{k}, ph, pw);
  end
end
