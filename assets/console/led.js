/*
 * led.js: draws a civicast LED preview (the JSON of GET /api/v1/preview, one "Preview"
 * object) onto a <canvas>, pixel-true: every LED of the class's 16-pixel-high matrix is one
 * dot on a dark background, lit ones amber (or red). A text that fits stands still, centred
 * as the answer's offset_x says; a wider one scrolls right to left at scroll_px_per_s, whole
 * LEDs at a time, entering at the right edge and leaving at the left, so one pass takes
 * pass_s seconds. With prefers-reduced-motion the text does not move: the matrix shows its
 * first window and the canvas's label says that it scrolls. No dependencies, no network.
 *
 * Use: <canvas data-led='{"bitmap":...}'></canvas> (the Preview JSON in the attribute, as
 * the console writes it server-side) and <script src="led.js"></script>; every such canvas
 * is drawn when the page loads. Options as attributes: data-led-colour="red",
 * data-led-pitch="4" (CSS pixels an LED). From script: CivicastLed.draw(canvas, preview,
 * {colour, pitch}) returns {stop()}.
 *
 * A standalone harness (save as a file beside led.js, open in a browser):
 *   <!doctype html><meta charset="utf-8"><body style="background:#222">
 *   <canvas id="c"></canvas><script src="led.js"></script><script>
 *   // "AB" on a 12-LED-wide matrix: 16 px of text, so it scrolls, a pass in 28/8 = 3.5 s.
 *   var rows = ["0000","0000","0000","0000","187c","2442","2442","4242","427c",
 *               "7e42","4242","4242","4242","427c","0000","0000"];
 *   CivicastLed.draw(document.getElementById("c"), {text: "AB", class: "demo",
 *     bitmap: {width: 16, height: 16, rows: rows}, display_width: 12, fits: false,
 *     layout: "scroll", offset_x: 0, scroll_px_per_s: 8, pass_s: 3.5,
 *     approximation: "An approximation"}, {pitch: 8});
 *   </script>
 */
(function (root) {
  "use strict";

  var COLOURS = {
    amber: { lit: "#ffb000", unlit: "#2a1d00" },
    red: { lit: "#ff3020", unlit: "#2a0806" }
  };
  var BACKGROUND = "#0b0b0b";
  var HEIGHT = 16;

  /* The bitmap's hex rows as 16 arrays of booleans, one a column. */
  function unpack(bitmap) {
    var width = bitmap.width | 0;
    var out = [];
    for (var y = 0; y < HEIGHT; y++) {
      var hex = (bitmap.rows && bitmap.rows[y]) || "";
      var row = new Array(width);
      for (var x = 0; x < width; x++) {
        var byte = parseInt(hex.substr((x >> 3) * 2, 2), 16) || 0;
        row[x] = (byte & (0x80 >> (x & 7))) !== 0;
      }
      out.push(row);
    }
    return out;
  }

  function reducedMotion() {
    return !!(root.matchMedia && root.matchMedia("(prefers-reduced-motion: reduce)").matches);
  }

  /*
   * Draws `preview` on `canvas`; returns {stop()} to end a scroll (and its listeners).
   */
  function draw(canvas, preview, options) {
    options = options || {};
    var colours = COLOURS[options.colour] || COLOURS.amber;
    var pitch = Math.max(1, Number(options.pitch) || 4);
    var display = Math.max(1, preview.display_width | 0);
    var text = unpack(preview.bitmap || {});
    var textWidth = (preview.bitmap && preview.bitmap.width) | 0;
    var speed = Math.max(1, Number(preview.scroll_px_per_s) || 1);
    var scrolls = !preview.fits;
    var ratio = root.devicePixelRatio || 1;
    var ctx = canvas.getContext("2d");
    var frame = null;
    var motion = null;

    canvas.style.width = display * pitch + "px";
    canvas.style.height = HEIGHT * pitch + "px";
    canvas.width = Math.round(display * pitch * ratio);
    canvas.height = Math.round(HEIGHT * pitch * ratio);
    canvas.setAttribute("role", "img");

    function label(still) {
      var what = (preview.text || "") + " (" + (preview.class || "") + ", " + display + " px";
      if (scrolls) {
        what += still
          ? "; scrolls, a pass in " + Number(preview.pass_s).toFixed(1) + " s; shown still"
          : "; scrolling, a pass in " + Number(preview.pass_s).toFixed(1) + " s";
      }
      canvas.setAttribute("aria-label", what + "). " + (preview.approximation || ""));
    }

    /* The matrix with the text's column 0 at matrix column `x0`. */
    function paint(x0) {
      var p = pitch * ratio;
      var r = p * 0.4;
      ctx.fillStyle = BACKGROUND;
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      for (var y = 0; y < HEIGHT; y++) {
        for (var x = 0; x < display; x++) {
          var tx = x - x0;
          var on = tx >= 0 && tx < textWidth && text[y][tx];
          ctx.fillStyle = on ? colours.lit : colours.unlit;
          ctx.beginPath();
          ctx.arc(x * p + p / 2, y * p + p / 2, r, 0, 2 * Math.PI);
          ctx.fill();
        }
      }
    }

    function still() {
      stopFrames();
      label(true);
      // Static: centred as the server placed it; a scrolling text shows its first window.
      paint(scrolls ? 0 : preview.offset_x | 0);
    }

    function stopFrames() {
      if (frame !== null) {
        root.cancelAnimationFrame(frame);
        frame = null;
      }
    }

    function scroll() {
      var start = null;
      var last = null;
      var travel = textWidth + display;
      label(false);
      function step(now) {
        if (start === null) {
          start = now;
        }
        // Whole LEDs travelled since the start of this pass.
        var moved = Math.floor(((now - start) / 1000) * speed) % travel;
        if (moved !== last) {
          last = moved;
          paint(display - moved);
        }
        frame = root.requestAnimationFrame(step);
      }
      frame = root.requestAnimationFrame(step);
    }

    function choose() {
      stopFrames();
      if (scrolls && !reducedMotion() && root.requestAnimationFrame) {
        scroll();
      } else {
        still();
      }
    }

    if (root.matchMedia) {
      motion = root.matchMedia("(prefers-reduced-motion: reduce)");
      if (motion.addEventListener) {
        motion.addEventListener("change", choose);
      }
    }
    choose();

    return {
      stop: function () {
        stopFrames();
        if (motion && motion.removeEventListener) {
          motion.removeEventListener("change", choose);
        }
      }
    };
  }

  /* Every <canvas data-led="{...}"> of the page. */
  function drawAll(doc) {
    var list = (doc || root.document).querySelectorAll("canvas[data-led]");
    for (var i = 0; i < list.length; i++) {
      var c = list[i];
      try {
        draw(c, JSON.parse(c.getAttribute("data-led")), {
          colour: c.getAttribute("data-led-colour"),
          pitch: c.getAttribute("data-led-pitch")
        });
      } catch (e) {
        c.setAttribute("aria-label", "LED preview unavailable: " + e.message);
      }
    }
  }

  root.CivicastLed = { draw: draw, drawAll: drawAll, unpack: unpack };
  if (root.document) {
    if (root.document.readyState === "loading") {
      root.document.addEventListener("DOMContentLoaded", function () { drawAll(); });
    } else {
      drawAll();
    }
  }
})(typeof window !== "undefined" ? window : this);
