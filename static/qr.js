// QR Code encoder (ISO/IEC 18004) for the presenter's audience link: byte
// mode, error correction level M (about 15% of the symbol can be damaged),
// versions 1 to 10, which hold up to 213 bytes of UTF-8.

// MAX_QR_BYTES is the longest text, in UTF-8 bytes, that encodeQR accepts.
export const MAX_QR_BYTES = 213;

// Block structure of level M per version: error correction codewords per
// block, then [block count, data codewords per block] for each group.
const LEVEL_M_BLOCKS = [
  null,
  [10, [1, 16]],
  [16, [1, 28]],
  [26, [1, 44]],
  [18, [2, 32]],
  [24, [2, 43]],
  [16, [4, 27]],
  [18, [4, 31]],
  [22, [2, 38], [2, 39]],
  [22, [3, 36], [2, 37]],
  [26, [4, 43], [1, 44]],
];

// Row and column centres of the alignment patterns per version.
const ALIGNMENT_CENTRES = [
  null,
  [],
  [6, 18],
  [6, 22],
  [6, 26],
  [6, 30],
  [6, 34],
  [6, 22, 38],
  [6, 24, 42],
  [6, 26, 46],
  [6, 28, 50],
];

const LEVEL_M_FORMAT_BITS = 0b00;
const BYTE_MODE = 0b0100;
const MASK_COUNT = 8;

// Galois field GF(2^8) with the QR Code polynomial x^8+x^4+x^3+x^2+1.
const GF_EXP = new Uint8Array(512);
const GF_LOG = new Uint8Array(256);
{
  let value = 1;
  for (let i = 0; i < 255; i++) {
    GF_EXP[i] = value;
    GF_LOG[value] = i;
    value <<= 1;
    if (value & 0x100) {
      value ^= 0x11d;
    }
  }
  for (let i = 255; i < 512; i++) {
    GF_EXP[i] = GF_EXP[i - 255];
  }
}

function gfMultiply(a, b) {
  if (a === 0 || b === 0) {
    return 0;
  }
  return GF_EXP[GF_LOG[a] + GF_LOG[b]];
}

// generatorPolynomial returns the coefficients, highest degree first, of
// (x - α^0)(x - α^1)...(x - α^(degree-1)).
function generatorPolynomial(degree) {
  let poly = [1];
  for (let i = 0; i < degree; i++) {
    const next = new Array(poly.length + 1).fill(0);
    for (let j = 0; j < poly.length; j++) {
      next[j] ^= poly[j];
      next[j + 1] ^= gfMultiply(poly[j], GF_EXP[i]);
    }
    poly = next;
  }
  return poly;
}

// errorCorrectionCodewords returns the Reed-Solomon remainder of data
// multiplied by x^degree and divided by the generator polynomial.
export function errorCorrectionCodewords(data, degree) {
  const generator = generatorPolynomial(degree);
  const remainder = new Array(degree).fill(0);
  for (const byte of data) {
    const factor = byte ^ remainder.shift();
    remainder.push(0);
    for (let i = 0; i < degree; i++) {
      remainder[i] ^= gfMultiply(generator[i + 1], factor);
    }
  }
  return remainder;
}

function dataCodewordCount(version) {
  const [, ...groups] = LEVEL_M_BLOCKS[version];
  return groups.reduce((sum, [blocks, size]) => sum + blocks * size, 0);
}

function countBits(version) {
  return version < 10 ? 8 : 16;
}

function chooseVersion(byteCount) {
  for (let version = 1; version < LEVEL_M_BLOCKS.length; version++) {
    const needed = 4 + countBits(version) + byteCount * 8;
    if (needed <= dataCodewordCount(version) * 8) {
      return version;
    }
  }
  return 0;
}

// dataCodewords packs the mode, the length, the bytes, the terminator and
// the pad codewords into the version's data capacity.
function dataCodewords(bytes, version) {
  const bits = [];
  const push = (value, length) => {
    for (let i = length - 1; i >= 0; i--) {
      bits.push((value >>> i) & 1);
    }
  };

  push(BYTE_MODE, 4);
  push(bytes.length, countBits(version));
  for (const byte of bytes) {
    push(byte, 8);
  }

  const capacity = dataCodewordCount(version) * 8;
  push(0, Math.min(4, capacity - bits.length));
  push(0, (8 - (bits.length % 8)) % 8);

  const codewords = [];
  for (let i = 0; i < bits.length; i += 8) {
    codewords.push(bits.slice(i, i + 8).reduce((byte, bit) => (byte << 1) | bit, 0));
  }
  for (let pad = 0xec; codewords.length < capacity / 8; pad ^= 0xec ^ 0x11) {
    codewords.push(pad);
  }
  return codewords;
}

// interleave splits data into the version's blocks, adds error correction
// to each and returns the codewords in transmission order.
function interleave(data, version) {
  const [ecPerBlock, ...groups] = LEVEL_M_BLOCKS[version];
  const blocks = [];
  let offset = 0;
  for (const [count, size] of groups) {
    for (let i = 0; i < count; i++) {
      const block = data.slice(offset, offset + size);
      offset += size;
      blocks.push({ data: block, ec: errorCorrectionCodewords(block, ecPerBlock) });
    }
  }

  const result = [];
  const longest = Math.max(...blocks.map((block) => block.data.length));
  for (let i = 0; i < longest; i++) {
    for (const block of blocks) {
      if (i < block.data.length) {
        result.push(block.data[i]);
      }
    }
  }
  for (let i = 0; i < ecPerBlock; i++) {
    for (const block of blocks) {
      result.push(block.ec[i]);
    }
  }
  return result;
}

// Matrix contains the modules (1 dark, 0 light) and marks the function
// patterns that data and masks must not touch.
class Matrix {
  constructor(version) {
    this.version = version;
    this.size = version * 4 + 17;
    this.modules = new Uint8Array(this.size * this.size);
    this.reserved = new Uint8Array(this.size * this.size);
  }

  get(row, col) {
    return this.modules[row * this.size + col];
  }

  setFunction(row, col, dark) {
    this.modules[row * this.size + col] = dark ? 1 : 0;
    this.reserved[row * this.size + col] = 1;
  }

  isReserved(row, col) {
    return this.reserved[row * this.size + col] === 1;
  }
}

function drawFinder(matrix, top, left) {
  for (let dr = -1; dr <= 7; dr++) {
    for (let dc = -1; dc <= 7; dc++) {
      const row = top + dr;
      const col = left + dc;
      if (row < 0 || col < 0 || row >= matrix.size || col >= matrix.size) {
        continue;
      }
      const inside = dr >= 0 && dr <= 6 && dc >= 0 && dc <= 6;
      const ring = dr === 0 || dr === 6 || dc === 0 || dc === 6;
      const core = dr >= 2 && dr <= 4 && dc >= 2 && dc <= 4;
      matrix.setFunction(row, col, inside && (ring || core));
    }
  }
}

function drawAlignment(matrix, centreRow, centreCol) {
  for (let dr = -2; dr <= 2; dr++) {
    for (let dc = -2; dc <= 2; dc++) {
      const distance = Math.max(Math.abs(dr), Math.abs(dc));
      matrix.setFunction(centreRow + dr, centreCol + dc, distance !== 1);
    }
  }
}

function drawFunctionPatterns(matrix) {
  const { size, version } = matrix;
  drawFinder(matrix, 0, 0);
  drawFinder(matrix, 0, size - 7);
  drawFinder(matrix, size - 7, 0);

  for (let i = 8; i < size - 8; i++) {
    matrix.setFunction(6, i, i % 2 === 0);
    matrix.setFunction(i, 6, i % 2 === 0);
  }

  const centres = ALIGNMENT_CENTRES[version];
  const last = centres.length - 1;
  centres.forEach((row, i) => {
    centres.forEach((col, j) => {
      const overlapsFinder = (i === 0 && j === 0) || (i === 0 && j === last) || (i === last && j === 0);
      if (!overlapsFinder) {
        drawAlignment(matrix, row, col);
      }
    });
  });

  drawFormatBits(matrix, 0);
  drawVersionBits(matrix);
}

// formatBits returns the 15-bit format information: level and mask,
// protected by a BCH(15,5) code and XORed with the fixed pattern 0x5412.
function formatBits(mask) {
  const data = (LEVEL_M_FORMAT_BITS << 3) | mask;
  let remainder = data;
  for (let i = 0; i < 10; i++) {
    remainder = (remainder << 1) ^ ((remainder >>> 9) * 0x537);
  }
  return ((data << 10) | (remainder & 0x3ff)) ^ 0x5412;
}

function drawFormatBits(matrix, mask) {
  const bits = formatBits(mask);
  const bit = (i) => (bits >>> i) & 1;
  const { size } = matrix;

  // First copy, around the top-left finder.
  for (let i = 0; i <= 5; i++) {
    matrix.setFunction(i, 8, bit(i));
  }
  matrix.setFunction(7, 8, bit(6));
  matrix.setFunction(8, 8, bit(7));
  matrix.setFunction(8, 7, bit(8));
  for (let i = 9; i < 15; i++) {
    matrix.setFunction(8, 14 - i, bit(i));
  }

  // Second copy, split between the top-right and bottom-left finders.
  for (let i = 0; i < 8; i++) {
    matrix.setFunction(8, size - 1 - i, bit(i));
  }
  for (let i = 8; i < 15; i++) {
    matrix.setFunction(size - 15 + i, 8, bit(i));
  }
  matrix.setFunction(size - 8, 8, 1);
}

// drawVersionBits writes the 18-bit version information that versions 7
// and above carry: six bits of version and a BCH(18,6) remainder.
function drawVersionBits(matrix) {
  const { size, version } = matrix;
  if (version < 7) {
    return;
  }

  let remainder = version;
  for (let i = 0; i < 12; i++) {
    remainder = (remainder << 1) ^ ((remainder >>> 11) * 0x1f25);
  }
  const bits = (version << 12) | (remainder & 0xfff);

  for (let i = 0; i < 18; i++) {
    const dark = (bits >>> i) & 1;
    const near = Math.floor(i / 3);
    const far = size - 11 + (i % 3);
    matrix.setFunction(near, far, dark);
    matrix.setFunction(far, near, dark);
  }
}

// placeCodewords fills the non-function modules in the standard zigzag:
// two-column strips from the right edge, alternately upwards and
// downwards, skipping the vertical timing pattern in column 6.
function placeCodewords(matrix, codewords) {
  const { size } = matrix;
  const totalBits = codewords.length * 8;
  let index = 0;
  for (let right = size - 1; right >= 1; right -= 2) {
    if (right === 6) {
      right = 5;
    }
    const upwards = ((right + 1) & 2) === 0;
    for (let step = 0; step < size; step++) {
      const row = upwards ? size - 1 - step : step;
      for (let offset = 0; offset < 2; offset++) {
        const col = right - offset;
        if (matrix.isReserved(row, col)) {
          continue;
        }
        const dark = index < totalBits ? (codewords[index >>> 3] >>> (7 - (index & 7))) & 1 : 0;
        matrix.modules[row * size + col] = dark;
        index += 1;
      }
    }
  }
}

const MASK_CONDITIONS = [
  (r, c) => (r + c) % 2 === 0,
  (r) => r % 2 === 0,
  (r, c) => c % 3 === 0,
  (r, c) => (r + c) % 3 === 0,
  (r, c) => (Math.floor(r / 2) + Math.floor(c / 3)) % 2 === 0,
  (r, c) => ((r * c) % 2) + ((r * c) % 3) === 0,
  (r, c) => (((r * c) % 2) + ((r * c) % 3)) % 2 === 0,
  (r, c) => (((r + c) % 2) + ((r * c) % 3)) % 2 === 0,
];

// applyMask flips the data modules where the mask's condition is true.
// Applying the same mask twice restores the matrix.
function applyMask(matrix, mask) {
  const condition = MASK_CONDITIONS[mask];
  for (let row = 0; row < matrix.size; row++) {
    for (let col = 0; col < matrix.size; col++) {
      if (!matrix.isReserved(row, col) && condition(row, col)) {
        matrix.modules[row * matrix.size + col] ^= 1;
      }
    }
  }
}

// linePenalty scores one row or column: runs of five or more modules of one
// colour (rule 1) and finder-like 1:1:3:1:1 patterns with four light
// modules on one side (rule 3), counting the quiet zone as light.
function linePenalty(line) {
  let score = 0;
  let run = 1;
  for (let i = 1; i <= line.length; i++) {
    if (i < line.length && line[i] === line[i - 1]) {
      run += 1;
      continue;
    }
    if (run >= 5) {
      score += run - 2;
    }
    run = 1;
  }

  const padded = `0000${line.join("")}0000`;
  for (let i = padded.indexOf("1011101"); i >= 0; i = padded.indexOf("1011101", i + 1)) {
    if (padded.startsWith("0000", i - 4)) {
      score += 40;
    }
    if (padded.startsWith("0000", i + 7)) {
      score += 40;
    }
  }
  return score;
}

// penalty scores a masked matrix by the four rules of the standard. The
// encoder keeps the mask with the lowest score.
function penalty(matrix) {
  const { size } = matrix;
  let score = 0;
  for (let i = 0; i < size; i++) {
    const row = [];
    const col = [];
    for (let j = 0; j < size; j++) {
      row.push(matrix.get(i, j));
      col.push(matrix.get(j, i));
    }
    score += linePenalty(row) + linePenalty(col);
  }

  for (let r = 0; r < size - 1; r++) {
    for (let c = 0; c < size - 1; c++) {
      const colour = matrix.get(r, c);
      if (colour === matrix.get(r, c + 1) && colour === matrix.get(r + 1, c) && colour === matrix.get(r + 1, c + 1)) {
        score += 3;
      }
    }
  }

  const dark = matrix.modules.reduce((sum, module) => sum + module, 0);
  const percent = (dark * 100) / (size * size);
  score += Math.floor(Math.abs(percent - 50) / 5) * 10;
  return score;
}

// encodeQR encodes text as a QR Code and returns {version, size, mask,
// modules} where modules[row * size + col] is 1 for a dark module. It
// returns null when the UTF-8 form of text is longer than MAX_QR_BYTES.
export function encodeQR(text) {
  const bytes = new TextEncoder().encode(text);
  const version = chooseVersion(bytes.length);
  if (version === 0) {
    return null;
  }

  const matrix = new Matrix(version);
  drawFunctionPatterns(matrix);
  placeCodewords(matrix, interleave(dataCodewords(bytes, version), version));

  let best = { mask: 0, score: Infinity };
  for (let mask = 0; mask < MASK_COUNT; mask++) {
    applyMask(matrix, mask);
    drawFormatBits(matrix, mask);
    const score = penalty(matrix);
    if (score < best.score) {
      best = { mask, score };
    }
    applyMask(matrix, mask);
  }

  applyMask(matrix, best.mask);
  drawFormatBits(matrix, best.mask);
  return { version, size: matrix.size, mask: best.mask, modules: matrix.modules };
}

// renderQR returns an SVG element that draws code with a light quiet zone
// of four modules. The SVG scales to any size without blurring.
export function renderQR(code, label) {
  const ns = "http://www.w3.org/2000/svg";
  const quiet = 4;
  const extent = code.size + quiet * 2;

  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${extent} ${extent}`);
  svg.setAttribute("shape-rendering", "crispEdges");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);

  const background = document.createElementNS(ns, "rect");
  background.setAttribute("width", String(extent));
  background.setAttribute("height", String(extent));
  background.setAttribute("fill", "#ffffff");

  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", qrPathData(code, quiet));
  path.setAttribute("fill", "#000000");

  svg.append(background, path);
  return svg;
}

// qrPathData draws each horizontal run of dark modules as one rectangle.
function qrPathData(code, quiet) {
  const parts = [];
  for (let row = 0; row < code.size; row++) {
    let col = 0;
    while (col < code.size) {
      if (!code.modules[row * code.size + col]) {
        col += 1;
        continue;
      }
      const start = col;
      while (col < code.size && code.modules[row * code.size + col]) {
        col += 1;
      }
      parts.push(`M${start + quiet} ${row + quiet}h${col - start}v1h-${col - start}z`);
    }
  }
  return parts.join("");
}
