// Runs assets/console/led.js against a fake canvas and clock (node, no browser): the text is
// unpacked pixel-true, stands centred when it fits, and scrolls whole LEDs at its speed, a
// pass in pass_s, unless the reader prefers reduced motion. Exits non-zero on a failure.
"use strict";
const fs = require("fs");
const path = require("path");
const assert = require("assert");

const source = fs.readFileSync(path.join(__dirname, "../../assets/console/led.js"), "utf8");

/* A window whose animation frames run when `tick(ms)` says, and a canvas that records the
   lit dots of its last frame. */
function world(reduce) {
  const frames = [];
  const win = {
    devicePixelRatio: 1,
    matchMedia: () => ({ matches: reduce, addEventListener() {}, removeEventListener() {} }),
    requestAnimationFrame: (f) => frames.push(f),
    cancelAnimationFrame: () => {},
  };
  new Function("window", source + "\n//# sourceURL=led.js")(win);
  const canvas = {
    style: {}, attrs: {}, dots: [], lit: [],
    setAttribute(k, v) { this.attrs[k] = v; },
    getContext() {
      const c = this;
      return {
        fillStyle: "", fillRect() { c.dots = []; },
        beginPath() {}, arc(x, y) { c.dots.push({ x, y, colour: this.fillStyle }); },
        fill() {},
      };
    },
  };
  const tick = (ms) => {
    const run = frames.splice(0, frames.length);
    run.forEach((f) => f(ms));
  };
  return { led: win.CivicastLed, canvas, tick };
}

/* Lit columns of row `y` (pitch 1: a dot's x is the column + 0.5). */
const litColumns = (canvas, y) =>
  canvas.dots.filter((d) => d.y === y + 0.5 && d.colour === "#ffb000").map((d) => d.x - 0.5);

// "A" then "B": Unifont's rows, side by side.
const rows = ["0000", "0000", "0000", "0000", "187c", "2442", "2442", "4242", "427c",
  "7e42", "4242", "4242", "4242", "427c", "0000", "0000"];
const ab = (display, fits, offset) => ({
  text: "AB", class: "demo", bitmap: { width: 16, height: 16, rows },
  display_width: display, fits, layout: fits ? "static" : "scroll", offset_x: offset,
  scroll_px_per_s: 8, pass_s: (16 + display) / 8, approximation: "An approximation",
});

{
  const { led } = world(false);
  const px = led.unpack({ width: 16, rows });
  assert.deepStrictEqual(px[9].map((on, x) => (on ? x : -1)).filter((x) => x >= 0),
    [1, 2, 3, 4, 5, 6, 9, 14], "row 9: the bar of the A, the sides of the B");
}
{
  const { led, canvas } = world(false);
  led.draw(canvas, ab(20, true, 2), { pitch: 1 });
  assert.strictEqual(canvas.dots.length, 20 * 16, "a dot per LED");
  assert.deepStrictEqual(litColumns(canvas, 9), [3, 4, 5, 6, 7, 8, 11, 16], "centred at 2");
  assert.strictEqual(canvas.style.width, "20px");
}
{
  const { led, canvas, tick } = world(false);
  led.draw(canvas, ab(12, false, 0), { pitch: 1 });
  tick(0);
  assert.deepStrictEqual(litColumns(canvas, 9), [], "enters from the right edge");
  tick(1000); // 8 LEDs travelled: columns 4.. show the text's 0..
  assert.deepStrictEqual(litColumns(canvas, 9), [5, 6, 7, 8, 9, 10], "moved 8 LEDs in 1 s");
  tick(3500); // one pass (28 LEDs at 8/s) later: back to the start
  assert.deepStrictEqual(litColumns(canvas, 9), []);
  assert.match(canvas.attrs["aria-label"], /scrolling, a pass in 3\.5 s/);
}
{
  const { led, canvas, tick } = world(true);
  led.draw(canvas, ab(12, false, 0), { pitch: 1 });
  tick(1000);
  assert.deepStrictEqual(litColumns(canvas, 9), [1, 2, 3, 4, 5, 6, 9], "still: the first window");
  assert.match(canvas.attrs["aria-label"], /shown still/);
}
console.log("led.js: ok");
