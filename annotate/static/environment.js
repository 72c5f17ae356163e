// Measures the screen and browser for the sitting's record.
(function () {
  "use strict";
  const dpr = window.devicePixelRatio || 1;
  document.getElementById("screen_width").value = Math.round(screen.width * dpr);
  document.getElementById("screen_height").value = Math.round(screen.height * dpr);
  document.getElementById("device_pixel_ratio").value = dpr;
  document.getElementById("browser").value = navigator.userAgent;
  document.getElementById("screen-shown").textContent =
    Math.round(screen.width * dpr) + " × " + Math.round(screen.height * dpr) + " device pixels, devicePixelRatio " + dpr;
})();
