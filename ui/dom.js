// Building the page from the API's values: every value becomes a text node, never HTML.

/** Build an element. Strings and numbers among the children become text nodes; null,
 * undefined and false are left out, so a child can be given only when it applies. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
