// Measures the browser window (in device pixels), pixel ratio and zoom for the display check.
(function () {
  "use strict";
  const dpr = window.devicePixelRatio || 1;
  // Browser zoom: the window's outer width over its inner width (1 at 100%; 0 outer = unknown).
  const zoom = window.outerWidth > 0 ? window.outerWidth / window.innerWidth : 1;
  const values = {
    window_width: Math.round(window.innerWidth * dpr),
    window_height: Math.round(window.innerHeight * dpr),
    screen_width: Math.round(screen.width * dpr),
    screen_height: Math.round(screen.height * dpr),
    device_pixel_ratio: dpr,
    zoom: Math.round(zoom * 100) / 100,
  };
  for (const [name, value] of Object.entries(values)) {
    document.getElementById(name).value = value;
  }
  document.getElementById("browser").value = navigator.userAgent;
  // The primary pointer: "coarse" (a finger: a phone or tablet), "fine" (a mouse), or "none".
  const pointer = ["coarse", "fine"].find((kind) => window.matchMedia("(pointer: " + kind + ")").matches);
  document.getElementById("pointer").value = pointer || "none";
  document.getElementById("display-shown").textContent =
    values.window_width + " × " + values.window_height + " window pixels, pixel ratio " + dpr +
    ", zoom " + Math.round(values.zoom * 100) + "%";
})();
