// Accessibility checks run in the page by the browser tests: the rules of axe-core that the
// issue names (labels, contrast, landmarks, duplicate names), written out small. Returns a list
// of violations, each a sentence naming the element; an empty list means the page passes.
const problems = [];
const visible = (el) => {
  const style = getComputedStyle(el);
  if (style.display === "none" || style.visibility === "hidden") return false;
  const box = el.getBoundingClientRect();
  if (box.width <= 1 || box.height <= 1) return false; // visually hidden text is for screen readers
  if (box.right < 0 || box.bottom < 0) return false; // the skip link waits off-screen until focused
  return el.offsetParent !== null || style.position === "fixed";
};
const describe = (el) => `<${el.tagName.toLowerCase()}${el.id ? ` id="${el.id}"` : ""}${el.className ? ` class="${el.className}"` : ""}> "${(el.textContent || el.value || "").trim().slice(0, 40)}"`;
const name = (el) => {
  if (el.getAttribute("aria-label")) return el.getAttribute("aria-label").trim();
  const by = el.getAttribute("aria-labelledby");
  if (by) return by.split(/\s+/).map((id) => document.getElementById(id)?.textContent || "").join(" ").trim();
  if (el.labels && el.labels.length) return [...el.labels].map((l) => l.textContent).join(" ").trim();
  if (el.tagName === "INPUT" && ["submit", "button"].includes(el.type)) return el.value;
  return (el.textContent || "").replace(/\s+/g, " ").trim() || el.getAttribute("title") || "";
};

// 1. Every field has a label.
for (const field of document.querySelectorAll("input, select, textarea")) {
  if (["hidden", "submit", "button"].includes(field.type) || field.hidden || !visible(field)) continue;
  if (!name(field)) problems.push(`label: ${describe(field)} has no label`);
}

// 2. Contrast: text 4.5:1 (3:1 when large), field borders 3:1 (WCAG 1.4.3 and 1.4.11).
const rgb = (color) => {
  const m = color.match(/rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)/);
  return m ? { r: +m[1], g: +m[2], b: +m[3], a: m[4] === undefined ? 1 : +m[4] } : null;
};
const luminance = ({ r, g, b }) => {
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
};
const ratio = (a, b) => { const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
const background = (el) => {
  for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
    const color = rgb(getComputedStyle(node).backgroundColor);
    if (color && color.a > 0) return color;
  }
  return { r: 255, g: 255, b: 255, a: 1 };
};
for (const el of document.querySelectorAll("body *")) {
  if (!visible(el) || el.disabled || el.closest("[disabled]")) continue;
  const ownText = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  const style = getComputedStyle(el);
  if (ownText && parseFloat(style.opacity) === 1) {
    const fg = rgb(style.color);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && parseInt(style.fontWeight, 10) >= 700);
    const need = large ? 3 : 4.5;
    const got = ratio(fg, background(el));
    if (got < need) problems.push(`contrast: ${describe(el)} is ${got.toFixed(2)}:1, needs ${need}:1`);
  }
  if (el.matches("input:not([type=hidden]):not([type=submit]):not([type=button]):not([type=checkbox]):not([type=radio]), select, textarea")) {
    const border = rgb(style.borderTopColor);
    const got = border ? ratio(border, background(el.parentElement)) : 0;
    if (parseFloat(style.borderTopWidth) > 0 && got < 3) problems.push(`contrast: the border of ${describe(el)} is ${got.toFixed(2)}:1, needs 3:1`);
  }
}

// 3. Landmarks: one main, a banner, and no content outside landmarks (the skip link aside).
if (document.querySelectorAll("main").length !== 1) problems.push("landmarks: the page needs exactly one <main>");
if (!document.querySelector("body > header")) problems.push("landmarks: the page has no banner (<header>)");
if (!document.documentElement.lang) problems.push("landmarks: <html> has no lang");
if (!document.title.trim()) problems.push("landmarks: the page has no title");
if (!document.querySelector("h1")) problems.push("landmarks: the page has no <h1>");
for (const child of document.body.children) {
  if (["SCRIPT", "STYLE"].includes(child.tagName) || child.matches("main, header, nav, footer, aside, .skip")) continue;
  if (visible(child)) problems.push(`landmarks: ${describe(child)} is outside every landmark`);
}
const skip = document.querySelector("a.skip[href='#content']");
if (!skip || !document.getElementById("content")) problems.push("landmarks: no skip link to the content");

// 4. Duplicate names: two controls that say the same thing must do the same thing.
const seen = new Map();
for (const el of document.querySelectorAll("a[href], button, input[type=submit]")) {
  if (!visible(el)) continue;
  // A link and a button may share a name (the "Sign in" link and the form's "Sign in" button).
  const label = `${el.tagName === "A" ? "link" : "button"} "${name(el).toLowerCase()}"`;
  if (!name(el)) { problems.push(`names: ${describe(el)} has no accessible name`); continue; }
  const form = el.form || el.closest("form");
  const target = el.tagName === "A" ? el.href : `${el.formAction || form?.action || ""} ${el.name}=${el.value}`;
  const before = seen.get(label);
  if (before === undefined) seen.set(label, target);
  else if (before !== target) problems.push(`names: more than one ${label} does different things`);
}
return [...new Set(problems)];
