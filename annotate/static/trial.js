// Trial page: the pair after a grey screen, both sliders required, the NSFW flag, keyboard
// operation and honest timings. Nothing responds until the pair is revealed, a failed image stops
// the trial, and in native presentation rating waits until the whole pair fits at 1:1. The server
// checks everything again (served page, minimum viewing time, current trial).
(function () {
  "use strict";
  const form = document.getElementById("trial-form");
  const pair = document.getElementById("pair");
  const grey = document.getElementById("grey");
  const failed = document.getElementById("failed");
  const warning = document.getElementById("warning");
  const submit = document.getElementById("submit");
  const nsfw = document.getElementById("nsfw");
  const reason = document.getElementById("nsfw_reason");
  const images = [document.getElementById("distorted"), document.getElementById("reference")];
  const scales = Array.from(document.querySelectorAll("fieldset.scale"));
  const labels = ["bad", "poor", "fair", "good", "excellent"];
  const native = pair.dataset.presentation !== "scaled";
  const greyMs = parseInt(grey.dataset.ms, 10) || 0;
  const minViewingMs = parseInt(grey.dataset.minViewingMs, 10) || 0;
  const moved = new Set();
  let revealedAt = null; // performance.now() of the reveal; null = keys and submit do nothing
  let viewedLongEnough = false;
  let fits = false;
  let broken = false;
  let firstInput = null;
  let sliderEvents = 0; // moves of either slider (pointer or key), sent with the rating

  function field(id, value) {
    const input = document.getElementById(id);
    if (input) input.value = value;
  }

  // Native: one image pixel = one device pixel. Scaled: both images by one common factor <= 1,
  // chosen so the pair fits the window; the factor is sent with the rating.
  function layout() {
    if (!images.every((img) => img.naturalWidth)) return;
    const dpr = window.devicePixelRatio || 1;
    const needWidth = images.reduce((sum, img) => sum + img.naturalWidth / dpr, 0) + 48;
    const needHeight = Math.max(...images.map((img) => img.naturalHeight / dpr));
    const roomWidth = document.documentElement.clientWidth;
    const roomHeight = window.innerHeight - form.offsetHeight - 70;
    const scale = native ? 1 : Math.min(1, (roomWidth - 48) / (needWidth - 48), roomHeight / needHeight);
    for (const img of images) {
      img.style.width = (img.naturalWidth / dpr) * scale + "px";
      img.style.height = (img.naturalHeight / dpr) * scale + "px";
    }
    field("scale", scale.toFixed(4));
    const problems = [];
    const expected = parseFloat(pair.dataset.expectedDpr);
    if (native && expected && Math.abs(expected - dpr) > 0.01) {
      problems.push("Browser zoom is not 100% (press Ctrl+0 / Cmd+0): images are not shown pixel for pixel.");
    }
    if (native && (needWidth > roomWidth || needHeight > roomHeight)) {
      problems.push("The window is too small to show both images at their true size: maximize it or use full screen (F11). Rating waits until the pair fits.");
    }
    fits = problems.length === 0;
    warning.textContent = problems.join(" ");
    warning.hidden = fits;
    update();
  }

  function reveal() {
    if (broken) return;
    layout();
    grey.classList.add("hidden");
    revealedAt = performance.now();
    field("reveal_ms", Math.round(revealedAt));
    setTimeout(() => { viewedLongEnough = true; update(); }, minViewingMs);
  }

  function fail() {
    broken = true;
    revealedAt = null;
    failed.hidden = false;
    pair.hidden = true;
    for (const input of form.querySelectorAll("input, button, textarea")) input.disabled = true;
  }

  function setValue(scale, value) {
    if (revealedAt === null) return;
    const slider = scale.querySelector("input[type=range]");
    const hidden = scale.querySelector("input[type=hidden]");
    const shown = scale.querySelector("output");
    slider.value = (Math.round(Math.min(5, Math.max(0, value)) * 10) / 10).toFixed(1);
    slider.classList.remove("unset");
    hidden.value = parseFloat(slider.value).toFixed(1);
    shown.textContent = hidden.value + " (" + labels[Math.min(4, Math.floor(slider.value))] + ")";
    moved.add(scale.dataset.name);
    sliderEvents += 1;
    field("slider_events", sliderEvents);
    if (firstInput === null) {
      firstInput = Math.round(performance.now() - revealedAt);
      field("first_input_ms", firstInput);
    }
    update();
  }

  function ready() {
    const reasonOk = !nsfw || !nsfw.checked || reason.value.trim().length > 0;
    return revealedAt !== null && viewedLongEnough && fits && !broken && moved.size === scales.length && reasonOk;
  }

  function update() {
    submit.disabled = !ready();
  }

  for (const scale of scales) {
    const slider = scale.querySelector("input[type=range]");
    for (const kind of ["input", "change"]) {
      slider.addEventListener(kind, () => {
        if (revealedAt === null) { slider.value = 2.5; return; }
        setValue(scale, parseFloat(slider.value));
      });
    }
  }
  if (nsfw) {
    nsfw.addEventListener("change", () => {
      pair.classList.toggle("blurred", nsfw.checked);
      reason.hidden = !nsfw.checked;
      reason.required = nsfw.checked;
      if (!nsfw.checked) reason.value = "";
      if (nsfw.checked) reason.focus();
      update();
    });
    reason.addEventListener("input", update);
  }

  document.addEventListener("keydown", (event) => {
    if (event.target === reason) return;
    if (revealedAt === null) { // under the grey screen nothing is typed, moved or sent
      if (event.key !== "Tab") event.preventDefault();
      return;
    }
    const active = scales.find((s) => s.contains(document.activeElement)) || scales[moved.has(scales[0].dataset.name) ? 1 : 0];
    if (/^[1-5]$/.test(event.key)) { // the middle of a labelled interval, never a boundary
      setValue(active, parseInt(event.key, 10) - 0.5);
      event.preventDefault();
    } else if (/^[0-9]$/.test(event.key)) {
      event.preventDefault();
    } else if (nsfw && (event.key === "n" || event.key === "N")) {
      nsfw.checked = !nsfw.checked;
      nsfw.dispatchEvent(new Event("change"));
      event.preventDefault();
    } else if (event.key === "Enter") {
      if (ready()) form.requestSubmit();
      event.preventDefault();
    } else if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
      const slider = active.querySelector("input[type=range]");
      const start = moved.has(active.dataset.name) ? parseFloat(slider.value) : 2.5;
      setValue(active, start + (event.key === "ArrowRight" ? 0.1 : -0.1));
      event.preventDefault();
    }
  });

  form.addEventListener("submit", (event) => {
    if (!ready()) { event.preventDefault(); return; }
    submit.disabled = true; // one click, one rating (the server ignores a resubmit anyway)
    grey.classList.remove("hidden");
  });

  window.addEventListener("resize", layout);
  let loaded = 0;
  const loadedOne = () => { loaded += 1; if (loaded === images.length) setTimeout(reveal, greyMs); };
  for (const img of images) {
    img.addEventListener("error", fail);
    if (img.complete && img.naturalWidth) loadedOne();
    else if (img.complete) fail();
    else img.addEventListener("load", loadedOne);
  }
  document.getElementById(scales[0].dataset.name + "-slider").focus();
})();
