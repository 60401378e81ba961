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
