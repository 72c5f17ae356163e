// Trial page: 1:1 pixel display, a grey screen between trials, both sliders required, the NSFW
// flag, keyboard operation, and a first-input time. The server validates everything again.
(function () {
  "use strict";
  const form = document.getElementById("trial-form");
  const pair = document.getElementById("pair");
  const grey = document.getElementById("grey");
  const warning = document.getElementById("warning");
  const submit = document.getElementById("submit");
  const nsfw = document.getElementById("nsfw");
  const reason = document.getElementById("nsfw_reason");
  const images = [document.getElementById("distorted"), document.getElementById("reference")];
  const scales = Array.from(document.querySelectorAll("fieldset.scale"));
  const labels = ["bad", "poor", "fair", "good", "excellent"];
  const moved = new Set();
  let shownAt = null;
  let firstInput = null;

  // One image pixel = one device pixel: CSS size = natural size / devicePixelRatio.
  function layout() {
    const dpr = window.devicePixelRatio || 1;
    let width = 0, height = 0;
    for (const img of images) {
      if (!img.naturalWidth) return;
      img.style.width = img.naturalWidth / dpr + "px";
      img.style.height = img.naturalHeight / dpr + "px";
      width += img.naturalWidth / dpr;
      height = Math.max(height, img.naturalHeight / dpr);
    }
    const problems = [];
    const expected = parseFloat(pair.dataset.expectedDpr);
    if (expected && Math.abs(expected - dpr) > 0.01) {
      problems.push("Browser zoom is not 100% (press Ctrl+0 / Cmd+0): images are not shown pixel for pixel.");
    }
    if (width + 48 > window.innerWidth || height + form.offsetHeight + 60 > window.innerHeight) {
      problems.push("The window is too small to show both images at their true size: maximize it or use full screen (F11).");
    }
    warning.textContent = problems.join(" ");
    warning.hidden = problems.length === 0;
  }

  function reveal() {
    layout();
    grey.classList.add("hidden");
    shownAt = performance.now();
  }

  function setValue(scale, value) {
    const slider = scale.querySelector("input[type=range]");
    const hidden = scale.querySelector("input[type=hidden]");
    const shown = scale.querySelector("output");
    slider.value = Math.min(5, Math.max(0, value)).toFixed(1);
    hidden.value = slider.value;
    shown.textContent = slider.value + " (" + labels[Math.min(4, Math.floor(slider.value))] + ")";
    moved.add(scale.dataset.name);
    if (firstInput === null && shownAt !== null) {
      firstInput = Math.round(performance.now() - shownAt);
      const field = document.getElementById("first_input_ms");
      if (field) field.value = firstInput;
    }
    update();
  }

  function update() {
    const reasonOk = !nsfw.checked || reason.value.trim().length > 0;
    submit.disabled = moved.size < scales.length || !reasonOk;
  }

  for (const scale of scales) {
    const slider = scale.querySelector("input[type=range]");
    slider.addEventListener("input", () => setValue(scale, parseFloat(slider.value)));
    slider.addEventListener("change", () => setValue(scale, parseFloat(slider.value)));
  }
  nsfw.addEventListener("change", () => {
    pair.classList.toggle("blurred", nsfw.checked);
    reason.hidden = !nsfw.checked;
    reason.required = nsfw.checked;
    if (nsfw.checked) reason.focus();
    update();
  });
  reason.addEventListener("input", update);

  document.addEventListener("keydown", (event) => {
    if (event.target === reason) return;
    const active = scales.find((s) => s.contains(document.activeElement)) || scales[moved.has(scales[0].dataset.name) ? 1 : 0];
    if (/^[0-5]$/.test(event.key)) {
      setValue(active, parseInt(event.key, 10));
      event.preventDefault();
    } else if (event.key === "n" || event.key === "N") {
      nsfw.checked = !nsfw.checked;
      nsfw.dispatchEvent(new Event("change"));
      event.preventDefault();
    } else if (event.key === "Enter" && !submit.disabled) {
      form.requestSubmit();
      event.preventDefault();
    } else if ((event.key === "ArrowLeft" || event.key === "ArrowRight") && document.activeElement.type !== "range") {
      const slider = active.querySelector("input[type=range]");
      setValue(active, parseFloat(slider.value) + (event.key === "ArrowRight" ? 0.1 : -0.1));
      event.preventDefault();
    }
  });

  form.addEventListener("submit", (event) => {
    if (submit.disabled) { event.preventDefault(); return; }
    submit.disabled = true; // one click, one rating (the server ignores a resubmit anyway)
    grey.classList.remove("hidden");
  });

  window.addEventListener("resize", layout);
  let loaded = 0;
  const ready = () => { loaded += 1; if (loaded === images.length) setTimeout(reveal, parseInt(grey.dataset.ms, 10) || 0); };
  for (const img of images) {
    if (img.complete && img.naturalWidth) ready(); else img.addEventListener("load", ready);
  }
  document.getElementById(scales[0].dataset.name + "-slider").focus();
})();
