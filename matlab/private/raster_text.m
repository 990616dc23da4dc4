function img = raster_text(img, str, row, col, scale, color)
%RASTER_TEXT  Draw STR into the RGB image IMG (H x W x 3, values in [0, 1]) with a 5x7 font.
%   ROW, COL: top-left pixel; SCALE: pixel size of one font dot; COLOR: [r g b].
%   For figures written without a graphics toolkit (GNU Octave without one); letters are
%   drawn lower-case, characters outside the font as spaces.
  persistent glyphs
  if isempty(glyphs)
    glyphs = font();
  end
  str = lower(char(str));
  [h, w, ~] = size(img);
  for k = 1:numel(str)
    code = double(str(k));
    if code < 1 || code > numel(glyphs) || isempty(glyphs{code})
      cols = zeros(1, 5);
    else
      cols = glyphs{code};
    end
    x0 = col + (k - 1) * 6 * scale;
    for c = 1:5
      for r = 1:7
        if bitand(cols(c), bitshift(1, r - 1))
          rr = row + (r - 1) * scale + (0:scale - 1);
          cc = x0 + (c - 1) * scale + (0:scale - 1);
          rr = rr(rr >= 1 & rr <= h);
          cc = cc(cc >= 1 & cc <= w);
          for ch = 1:3
            img(rr, cc, ch) = color(ch);
          end
        end
      end
    end
  end
end


function g = font()
  % Five column bytes per character, bit 0 the top row (the classic 5x7 LCD font).
  g = cell(1, 127);
  def = {
    '0', [62 81 73 69 62];  '1', [0 66 127 64 0];  '2', [66 97 81 73 70];  '3', [33 65 69 75 49];
    '4', [24 20 18 127 16]; '5', [39 69 69 69 57]; '6', [60 74 73 73 48];  '7', [1 113 9 5 3];
    '8', [54 73 73 73 54];  '9', [6 73 73 41 30];
    'a', [32 84 84 84 120]; 'b', [127 72 68 68 56]; 'c', [56 68 68 68 32]; 'd', [56 68 68 72 127];
    'e', [56 84 84 84 24];  'f', [8 126 9 1 2];     'g', [12 82 82 82 62]; 'h', [127 8 4 4 120];
    'i', [0 68 125 64 0];   'j', [32 64 68 61 0];   'k', [127 16 40 68 0]; 'l', [0 65 127 64 0];
    'm', [124 4 24 4 120];  'n', [124 8 4 4 120];   'o', [56 68 68 68 56]; 'p', [124 20 20 20 8];
    'q', [8 20 20 24 124];  'r', [124 8 4 4 8];     's', [72 84 84 84 32]; 't', [4 63 68 64 32];
    'u', [60 64 64 32 124]; 'v', [28 32 64 32 28];  'w', [60 64 48 64 60]; 'x', [68 40 16 40 68];
    'y', [12 80 80 80 60];  'z', [68 100 84 76 68];
    '.', [0 96 96 0 0];     ',', [0 80 48 0 0];     '-', [8 8 8 8 8];      '_', [64 64 64 64 64];
    '(', [0 28 34 65 0];    ')', [0 65 34 28 0];    ':', [0 54 54 0 0];    '/', [32 16 8 4 2];
    '+', [8 8 62 8 8];      '=', [20 20 20 20 20];  '%', [35 19 8 100 98]; '''', [0 5 3 0 0];
  };
  for k = 1:size(def, 1)
    g{double(def{k, 1})} = def{k, 2};
  end
end
