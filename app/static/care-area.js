"use strict";
// A care area drawn over a picture of the part (served as /static/care-area.js; needs page.js): the new product
// page draws one over the images chosen, a category's page over one of its good images. Shapes are outlined by
// clicks, each closed by a click on its first corner (or "Close the shape", or Enter), or dragged out as rectangles:
// "the part" adds what it outlines to the area, "leave out" takes it away. The mask the service gets is painted
// from the shapes in that order over a start: the mask loaded (a file, or the category's own area), else black
// where any shape outlines the part, else white. The service stretches it over each picture, as it does an uploaded
// mask, so it is drawn in the picture's proportions, at most MASK_SIDE pixels on its long side (a patch cell spans
// 8 of the view's pixels: far coarser).

const MASK_SIDE = 1024;
const SHOWN_SIDE = 480;  // the drawing's long side on the page, in CSS pixels
const CLOSE_PX = 10;     // a click this near the first corner closes the shape

// options.pixels(): the view's pixels a fit would take (null: the service's default), for the cells shown
function careEditor(options = {}) {
  const picture = el("canvas", {class: "care-draw", width: SHOWN_SIDE, height: SHOWN_SIDE * 3 / 4});
  const mode = el("select", {class: "care-mode"},
    el("option", {value: "part", text: "outline the part (inspected)"}),
    el("option", {value: "out", text: "leave out (not inspected)"}));
  const close = el("button", {type: "button", class: "care-close", text: "Close the shape"});
  const undo = el("button", {type: "button", class: "care-undo", text: "Undo"});
  const clear = el("button", {type: "button", class: "care-clear", text: "Clear"});
  const said = el("span", {class: "small care-share"});
  const node = el("div", {class: "care-editor"}, picture, el("div", {},
    el("label", {class: "small"}, "Each click a corner, or drag a rectangle: ", mode), " ", close, " ", undo, " ", clear, " ", said));
  const shapes = [];   // {mode, points: [[x, y] in 0..1 of the picture]}, closed ones
  let open = [];       // the corners of the shape being drawn
  let image = null;    // the picture drawn over (an Image), or null
  let start = null;    // a mask loaded to start from (an Image), or null

  // the picture's proportions, at the finer of the picture's and the loaded mask's long sides, at most MASK_SIDE
  const size = () => {
    const [w, h] = image ? [image.naturalWidth, image.naturalHeight] : start ? [start.naturalWidth, start.naturalHeight] : [4, 3];
    const side = Math.min(MASK_SIDE, Math.max(w, h, start ? Math.max(start.naturalWidth, start.naturalHeight) : 0));
    const scale = side / Math.max(w, h);
    return [Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(h * scale))];
  };

  function trace(context, points, w, h) {
    context.beginPath();
    points.forEach(([x, y], i) => (i ? context.lineTo(x * w, y * h) : context.moveTo(x * w, y * h)));
  }

  // The mask as the service will read it: white inspected, black not.
  function mask() {
    const [w, h] = size();
    const canvas = el("canvas", {width: w, height: h}), context = canvas.getContext("2d");
    if (start) context.drawImage(start, 0, 0, w, h);
    else { context.fillStyle = shapes.some((s) => s.mode === "part") ? "#000" : "#fff"; context.fillRect(0, 0, w, h); }
    for (const kind of ["part", "out"]) {
      context.fillStyle = kind === "part" ? "#fff" : "#000";
      for (const shape of shapes.filter((s) => s.mode === kind)) { trace(context, shape.points, w, h); context.fill(); }
    }
    return canvas;
  }

  function inspectedShare(canvas) {
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let lit = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i] || data[i + 1] || data[i + 2]) lit += 1;
    return lit / (data.length / 4);
  }

  // The cells a fit would inspect of this picture's patch grid, by the service's own rule (POST /care-area/cells),
  // asked a moment after the area last changed; until it answers the mask itself is shown.
  let grid = null, gridKey = null, gridTimer = null;
  const gridTurn = latest();
  function askCells() {
    const pixels = options.pixels ? options.pixels() : null;
    const key = JSON.stringify([shapes, start && start.src, image && sentSize(image), pixels]);
    if (key === gridKey) return;
    gridKey = key; grid = null; clearTimeout(gridTimer);
    if (!image || !changed()) return;
    const current = gridTurn();
    gridTimer = setTimeout(async () => {
      const form = new FormData();
      form.append("file", await new Promise((resolve) => mask().toBlob(resolve, "image/png")), "drawn.png");
      const [width, height] = sentSize(image);
      form.append("width", width); form.append("height", height);
      if (pixels) form.append("pixels", pixels);
      try {
        const response = await apiFetch("/care-area/cells", {method: "POST", body: form});
        const answer = response.ok ? await response.json() : {error: await apiError(response)};
        if (current()) { grid = answer; draw(); }
      } catch (error) { if (current()) { grid = {error: error.message}; draw(); } }
    }, 300);
  }

  // outside the area darkened (white leaves a pixel as it is, black takes 60% of it): by cells where they are known
  function darken(context, drawn, W, H) {
    let shade = drawn, w = W, h = H;
    if (grid && grid.cells) {
      shade = el("canvas", {width: grid.cols, height: grid.rows});
      const cells = shade.getContext("2d");
      grid.cells.forEach((row, r) => [...row].forEach((bit, c) => {
        cells.fillStyle = bit === "1" ? "#fff" : "#000"; cells.fillRect(c, r, 1, 1);
      }));
      const [width, height] = sentSize(image);
      w = W * Math.min(1, grid.cols * grid.cell[0] / width);  // the grid may leave a sliver uncovered
      h = H * Math.min(1, grid.rows * grid.cell[1] / height);
    }
    context.save(); context.globalAlpha = 0.6; context.globalCompositeOperation = "multiply";
    context.imageSmoothingEnabled = false; context.drawImage(shade, 0, 0, w, h); context.restore();
  }

  function area(drawn) {
    if (grid && grid.error) return `the service: ${grid.error}`;
    if (!grid || !grid.cells) return `inspects ${(100 * inspectedShare(drawn)).toFixed(1)}% of each picture`;
    const n = (v) => Number(v).toLocaleString("en-US");
    return `inspects ${(100 * grid.share).toFixed(1)}% of this picture's patch cells: ${n(grid.inspected)} of ` +
      `${n(grid.rows * grid.cols)} (${grid.rows} x ${grid.cols}, each ${Math.round(grid.cell[0])} x ` +
      `${Math.round(grid.cell[1])} pixels of the picture shown; a cell counts where half of it is in the area)`;
  }

  function draw() {
    askCells();
    picture.hidden = !image && !start;  // no empty grey box before a picture or a mask is chosen
    const [w, h] = size(), scale = SHOWN_SIDE / Math.max(w, h);
    picture.width = Math.round(w * scale); picture.height = Math.round(h * scale);
    const context = picture.getContext("2d"), W = picture.width, H = picture.height;
    context.fillStyle = "#888"; context.fillRect(0, 0, W, H);
    if (image) context.drawImage(image, 0, 0, W, H);
    const drawn = mask();
    if (changed()) darken(context, drawn, W, H);
    context.lineWidth = 2;
    for (const shape of shapes) {
      context.strokeStyle = shape.mode === "part" ? "#2f6fdf" : "#c62828";
      trace(context, shape.points, W, H); context.closePath(); context.stroke();
    }
    if (open.length) {
      context.strokeStyle = mode.value === "part" ? "#2f6fdf" : "#c62828";
      trace(context, open, W, H); context.stroke();
      context.fillStyle = context.strokeStyle;
      for (const [x, y] of open) context.fillRect(x * W - 3, y * H - 3, 6, 6);
    }
    if (dragged) {
      const [[ax, ay], [bx, by]] = dragged;
      context.strokeStyle = mode.value === "part" ? "#2f6fdf" : "#c62828"; context.setLineDash([6, 4]);
      context.strokeRect(ax * W, ay * H, (bx - ax) * W, (by - ay) * H); context.setLineDash([]);
    }
    said.textContent = !image && !start ? "choose a picture to draw over" : changed() ? area(drawn) +
      (open.length ? ` (a shape of ${open.length} corners is open)` : "") : "all of each picture is inspected";
    close.disabled = open.length < 3; undo.disabled = !open.length && !shapes.length; clear.disabled = !changed();
  }

  function closeShape() {
    if (open.length < 3) return;
    shapes.push({mode: mode.value, points: open}); open = []; draw();
  }

  // a point of the picture, in shares of its width and height, and the shown box it was read in
  function at(event) {
    const box = picture.getBoundingClientRect();
    const share = (v, low, size) => Math.min(1, Math.max(0, (v - low) / size));
    return [[share(event.clientX, box.left, box.width), share(event.clientY, box.top, box.height)], box];
  }

  // a click adds a corner (on the first one, closes the shape); a drag with no shape open draws a rectangle
  let pressed = null, dragged = null;  // where a press began; a drag's corners while it lasts
  picture.onpointerdown = (event) => {
    if (!image) return;
    pressed = at(event)[0];
    picture.setPointerCapture(event.pointerId);  // a drag that ends beyond the picture still ends here
    picture.focus();
  };
  picture.onpointermove = (event) => {
    if (!pressed || open.length) return;
    dragged = [pressed, at(event)[0]]; draw();
  };
  picture.onpointerup = (event) => {
    if (!pressed) return;
    const [[x, y], box] = at(event), [px, py] = pressed;
    pressed = null; dragged = null;
    if (!open.length && Math.hypot((x - px) * box.width, (y - py) * box.height) > CLOSE_PX) {
      shapes.push({mode: mode.value, points: [[px, py], [x, py], [x, y], [px, y]]}); draw(); return;
    }
    const [fx, fy] = open[0] || [];
    if (open.length >= 3 && Math.hypot((x - fx) * box.width, (y - fy) * box.height) <= CLOSE_PX) closeShape();
    else { open.push([x, y]); draw(); }
  };
  const takeBack = () => { if (open.length) open.pop(); else shapes.pop(); draw(); };
  picture.tabIndex = 0;  // Enter closes the shape, Backspace takes back a corner (or the last shape), Escape the open one
  picture.onkeydown = (event) => {
    const act = {Enter: closeShape, Backspace: takeBack, Delete: takeBack, Escape: () => { open = []; draw(); }}[event.key];
    if (act) { event.preventDefault(); act(); }
  };
  close.onclick = closeShape;
  undo.onclick = takeBack;
  clear.onclick = () => { shapes.length = 0; open = []; start = null; draw(); };

  const decoded = (source) => new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => { if (source instanceof Blob) URL.revokeObjectURL(img.src); resolve(img); };  // decoded: let go
    img.onerror = () => reject(new Error("the picture could not be read by this browser"));
    img.src = source instanceof Blob ? URL.createObjectURL(source) : source;
  });
  // a file in a format the browser cannot draw (TIFF): the picture as the service reads it (servicePreview), which
  // keeps the size it was sent at, the size a fit's cells are counted in
  const loadImage = async (source) => {
    try { return await decoded(source); } catch (error) {
      if (!(source instanceof Blob)) throw error;
      const shown = await servicePreview(source);
      const img = await decoded(shown.blob);
      img.sent = [shown.width, shown.height];
      return img;
    }
  };
  // a picture's size as it was sent (a preview's is smaller)
  function sentSize(img) { return img.sent || [img.naturalWidth, img.naturalHeight]; }

  function changed() { return Boolean(start || shapes.length); }

  draw();
  return {
    node,
    // the picture to draw over (a File or Blob), or null
    async setPicture(blob) { image = blob ? await loadImage(blob) : null; open = []; draw(); },
    // a mask to start from (a File or Blob: an uploaded one, or the category's own), or null
    async setStart(blob) { start = blob ? await loadImage(blob) : null; draw(); },
    changed,
    refresh: draw,  // the view's pixels changed: the cells are asked again
    drawn: () => shapes.length > 0,
    open: () => open.length > 0,
    // the mask as a PNG, or null where nothing was drawn or loaded (all of each picture)
    png() { return changed() ? new Promise((resolve) => mask().toBlob(resolve, "image/png")) : Promise.resolve(null); },
  };
}
