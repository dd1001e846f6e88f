// The query page: send the chosen or dropped photo to /api/query, then outline each face on
// the photo and list its closest identities. Text goes in through textContent only, so names
// from the gallery can never become markup.
"use strict";

(() => {
  const form = document.getElementById("query");
  const input = document.getElementById("image");
  const drop = form.querySelector(".drop");
  const status = document.getElementById("status");
  const result = document.getElementById("result");
  const photo = document.getElementById("photo");
  const boxes = document.getElementById("boxes");
  const faces = document.getElementById("faces");
  let photoUrl = null;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function say(message, isError) {
    status.textContent = message;
    status.classList.toggle("error", Boolean(isError));
    status.setAttribute("role", isError ? "alert" : "status");
  }

  function photoLoaded() {
    return photo.complete && photo.naturalWidth > 0
      ? Promise.resolve()
      : new Promise((resolve) => photo.addEventListener("load", resolve, { once: true }));
  }

  // Boxes are placed in percent of the photo, so they follow it at any displayed size.
  function drawBoxes(found) {
    boxes.replaceChildren();
    const w = photo.naturalWidth;
    const h = photo.naturalHeight;
    found.forEach((face, i) => {
      const [x, y, bw, bh] = face.box;
      const box = el("div", "box", String(i + 1));
      box.style.left = `${(100 * x) / w}%`;
      box.style.top = `${(100 * y) / h}%`;
      box.style.width = `${(100 * bw) / w}%`;
      box.style.height = `${(100 * bh) / h}%`;
      box.setAttribute("aria-hidden", "true");
      boxes.append(box);
    });
  }

  function matchItem(match) {
    const item = el("li", "match");
    const thumb = el("img");
    thumb.src = match.crop_url;
    thumb.width = thumb.height = 64;
    thumb.alt = `Enrolled face of ${match.identity}`;
    const name = el("a", "identity", match.identity);
    name.href = match.identity_url;
    const badge = match.match
      ? el("span", "badge badge-match", "match")
      : el("span", "badge badge-none", "no match");
    const numbers = el(
      "span",
      "numbers",
      `distance ${match.distance.toFixed(3)} · similarity ${match.similarity.toFixed(3)}`,
    );
    const text = el("div", "match-text");
    text.append(name, " ", badge, el("br"), numbers);
    item.append(thumb, text);
    return item;
  }

  function listFaces(found) {
    faces.replaceChildren();
    found.forEach((face, i) => {
      const item = el("li", "face");
      item.append(el("h3", null, `Face ${i + 1} (confidence ${face.confidence.toFixed(2)})`));
      const matches = el("ol", "matches");
      if (face.matches.length === 0) matches.append(el("li", null, "Nobody is enrolled yet."));
      face.matches.forEach((match) => matches.append(matchItem(match)));
      item.append(matches);
      faces.append(item);
    });
  }

  async function search(file) {
    if (!file) return;
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = URL.createObjectURL(file);
    result.hidden = true;
    say(`Searching for the faces in ${file.name}…`, false);
    const body = new FormData();
    body.append("image", file);
    let reply;
    let answer;
    try {
      reply = await fetch(form.action, { method: "POST", body });
      answer = await reply.json();
    } catch {
      say("The page could not reach the server. Check your connection and try again.", true);
      return;
    }
    if (!reply.ok) {
      say(answer.error || `The search failed (${reply.status}).`, true);
      return;
    }
    photo.src = photoUrl;
    document.getElementById("model-version").textContent = answer.model_version;
    listFaces(answer.faces);
    result.hidden = false;
    await photoLoaded();
    drawBoxes(answer.faces);
    const n = answer.faces.length;
    say(n === 0 ? "No face found in this photo." : `Found ${n} face${n === 1 ? "" : "s"}.`, false);
  }

  input.addEventListener("change", () => search(input.files[0]));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search(input.files[0]);
  });
  ["dragenter", "dragover"].forEach((type) =>
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    }),
  );
  ["dragleave", "drop"].forEach((type) =>
    drop.addEventListener(type, () => drop.classList.remove("dragging")),
  );
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) search(file);
  });
})();
