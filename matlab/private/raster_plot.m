function panel = raster_plot(x, ys, styles, title_text, h, w)
%RASTER_PLOT  An H x W x 3 image of line plots, drawn without a graphics toolkit.
%   X: n-vector; YS: cell of n-vectors; STYLES: struct array with .color ([r g b]),
%   .dashed (logical) and .label (legend text). The panel has a title, a frame,
%   the y range and x range written at the axes' ends, and a legend.
  panel = ones(h, w, 3);
  panel = raster_text(panel, title_text, 4, 8, 2, [0 0 0]);
  left = 62; right = w - 10; top = 24; bottom = h - 22;
  x = double(x(:));
  vals = cellfun(@(y) double(y(:)), ys, 'UniformOutput', false);
  allv = vertcat(vals{:});
  allv = allv(isfinite(allv));
  if isempty(allv)
    lo = 0; hi = 1;
  else
    lo = min(allv); hi = max(allv);
  end
  if hi - lo < 1e-12 * max(1, abs(hi))
    lo = lo - 0.5 * max(1, abs(lo)); hi = hi + 0.5 * max(1, abs(hi));
  end
  x0 = min(x); x1 = max(x);
  if x1 == x0
    x0 = x0 - 1; x1 = x1 + 1;
  end
  % frame and labels
  gray = [0.4 0.4 0.4];
  panel = fill(panel, top:bottom, [left left + 1 right - 1 right], gray);
  panel = fill(panel, [top top + 1 bottom - 1 bottom], left:right, gray);
  panel = raster_text(panel, sprintf('%.3g', hi), top, 4, 1, [0 0 0]);
  panel = raster_text(panel, sprintf('%.3g', lo), bottom - 7, 4, 1, [0 0 0]);
  panel = raster_text(panel, sprintf('%g', min(x)), bottom + 5, left, 1, [0 0 0]);
  xs = sprintf('%g', max(x));
  panel = raster_text(panel, xs, bottom + 5, right - 6 * numel(xs), 1, [0 0 0]);
  panel = raster_text(panel, 'epoch', bottom + 5, round((left + right) / 2) - 15, 1, [0 0 0]);
  px = @(v) left + 3 + (v - x0) / (x1 - x0) * (right - left - 6);
  py = @(v) bottom - 3 - (v - lo) / (hi - lo) * (bottom - top - 6);
  for k = 1:numel(vals)
    y = vals{k};
    c = styles(k).color;
    if numel(y) == 1 && isfinite(y)
      panel = fill(panel, round(py(y)) + (-2:2), round(px(x(1))) + (-2:2), c);
    end
    for s = 1:numel(y) - 1
      if ~all(isfinite(y(s:s + 1)))
        continue
      end
      a = [px(x(s)) py(y(s))]; b = [px(x(s + 1)) py(y(s + 1))];
      n = ceil(max(abs(b - a))) + 1;
      t = linspace(0, 1, n);
      cols = round(a(1) + t * (b(1) - a(1)));
      rows = round(a(2) + t * (b(2) - a(2)));
      keep = true(size(t));
      if styles(k).dashed
        keep = mod(floor((0:n - 1) / 5), 2) == 0;
      end
      for i = find(keep)
        panel = fill(panel, rows(i) + (0:1), cols(i) + (0:1), c);
      end
    end
    % legend entry, top right inside the frame
    lr = top + 4 + 10 * (k - 1);
    label = styles(k).label;
    lc = right - 6 * numel(label) - 22;
    panel = fill(panel, lr + (3:4), lc + (0:12), c);
    panel = raster_text(panel, label, lr, lc + 16, 1, c);
  end
end


function img = fill(img, rows, cols, color)
  rows = rows(rows >= 1 & rows <= size(img, 1));
  cols = cols(cols >= 1 & cols <= size(img, 2));
  for ch = 1:3
    img(rows, cols, ch) = color(ch);
  end
end
