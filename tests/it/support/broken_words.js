// Words of the page's own text (not what people wrote, not code listings) that the layout split
// across lines: "complet" / "ed", an id broken every few characters. Each word is measured with
// a Range: one laid out on two lines has boxes at two heights.
const broken = [];
const main = document.querySelector("main");
const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode;
  const element = node.parentElement;
  if (!element || element.closest(".text, pre, textarea, svg, script, style, .visually-hidden, thead")) continue;
  if (element.getClientRects().length === 0) continue; // not shown
  const words = /\S+/g;
  let match;
  while ((match = words.exec(node.data))) {
    const range = document.createRange();
    range.setStart(node, match.index);
    range.setEnd(node, match.index + match[0].length);
    const tops = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top)));
    if (tops.size > 1) broken.push(`${match[0]} (in <${element.tagName.toLowerCase()}${element.className ? " class=" + element.className : ""}>)`);
  }
}
return broken;
