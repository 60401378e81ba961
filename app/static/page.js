"use strict";
// Helpers shared by the inspect and category pages (served as /static/page.js).

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// The API's own words for a failed request: "status code: detail".
async function apiError(response) {
  try {
    const body = await response.json();
    return `${response.status} ${body.error || ""}: ${body.detail || JSON.stringify(body)}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

// The API key, when the service asks for one (it answers 401): kept for this browser tab only.
const KEY = "inspectApiKey";

async function apiFetch(url, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(url, {...options, headers});
  if (response.status === 401) askForKey(key ? "That key was refused." : "This service needs an API key.");
  return response;
}

// Images come through apiFetch too (an <img src> cannot send a key).
async function apiImage(img, url) {
  const response = await apiFetch(url);
  if (response.ok) img.src = URL.createObjectURL(await response.blob());
  else img.title = await apiError(response);
}

function askForKey(why) {
  if (document.getElementById("keyBar")) return;
  const input = el("input", {id: "apiKey", type: "password", size: 40, placeholder: "API key"});
  const use = el("button", {id: "useKey", text: "Use this key"});
  use.onclick = () => { sessionStorage.setItem(KEY, input.value.trim()); location.reload(); };
  input.onkeydown = (event) => { if (event.key === "Enter") use.click(); };
  document.body.prepend(el("div", {id: "keyBar", class: "error"}, `${why} `, input, " ", use,
    el("span", {class: "small", text: " (kept in this tab only; ask your administrator for one)"})));
}
