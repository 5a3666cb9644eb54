// A small Markdown renderer for the chat's answers (CommonMark's common subset: fenced code, headings,
// lists, quotes, tables, rules, emphasis, inline code, http(s) links). Every character of the source is
// HTML-escaped before any tag is added, so a reply can never inject markup or script. An unclosed code
// fence (an answer still streaming) renders as a code block up to the end.
"use strict";

const Markdown = (() => {
  const escape = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
                         .replace(/"/g, "&quot;").replace(/'/g, "&#39;");

  // Emphasis and links on escaped text; code spans are cut out first so their content stays literal.
  function inline(text) {
    let out = "";
    const code = /(`+)([\s\S]*?[^`])\1(?!`)/g;
    let last = 0, m;
    while ((m = code.exec(text))) {
      out += format(text.slice(last, m.index)) + "<code>" + escape(m[2].trim()) + "</code>";
      last = code.lastIndex;
    }
    return out + format(text.slice(last));
  }

  function format(text) {
    return escape(text)
      .replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g, '<a href="$2" target="_blank" rel="noopener noreferrer">$1</a>')
      .replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, "<strong>$1</strong>")
      .replace(/__(?=\S)([\s\S]*?\S)__/g, "<strong>$1</strong>")
      .replace(/(^|[^*])\*(?=[^\s*])([^*]*?[^\s*])\*(?!\*)/g, "$1<em>$2</em>")
      .replace(/(^|[^\w])_(?=\S)([^_]*?\S)_(?!\w)/g, "$1<em>$2</em>")
      .replace(/~~(?=\S)([\s\S]*?\S)~~/g, "<del>$1</del>");
  }

  const FENCE = /^\s*(`{3,}|~{3,})\s*([\w+#.-]*)[^\n]*$/;
  const LIST = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const TABLE_RULE = /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/;
  const startsBlock = (line) => FENCE.test(line) || /^\s{0,3}(#{1,6}\s|>)/.test(line) || LIST.test(line);
  const cells = (line) => line.trim().replace(/^\||\|$/g, "").split("|").map((c) => inline(c.trim()));

  function render(src) {
    const lines = src.replace(/\r\n?/g, "\n").split("\n");
    let html = "";
    for (let i = 0; i < lines.length;) {
      const line = lines[i];
      let m;
      if ((m = line.match(FENCE))) {
        const close = new RegExp("^\\s*" + m[1][0] + "{" + m[1].length + ",}\\s*$");
        const body = [];
        for (++i; i < lines.length && !close.test(lines[i]); ++i) body.push(lines[i]);
        ++i;
        const lang = m[2] ? `<span class="lang">${escape(m[2])}</span>` : "";
        html += `<pre>${lang}<code>${escape(body.join("\n"))}</code></pre>`;
      } else if (/^\s*$/.test(line)) {
        ++i;
      } else if ((m = line.match(/^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/))) {
        html += `<h${m[1].length}>${inline(m[2])}</h${m[1].length}>`;
        ++i;
      } else if (/^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) {
        html += "<hr>";
        ++i;
      } else if (/^\s{0,3}>/.test(line)) {
        const body = [];
        for (; i < lines.length && /^\s{0,3}>/.test(lines[i]); ++i) body.push(lines[i].replace(/^\s{0,3}>\s?/, ""));
        html += `<blockquote>${render(body.join("\n"))}</blockquote>`;
      } else if ((m = line.match(LIST))) {
        const ordered = /\d/.test(m[2]);
        const items = [];
        for (; i < lines.length; ++i) {
          const item = lines[i].match(LIST);
          if (item && /\d/.test(item[2]) === ordered) items.push(item[3]);
          else if (items.length && /^\s+\S/.test(lines[i]) && !FENCE.test(lines[i])) items[items.length - 1] += " " + lines[i].trim();
          else break;
        }
        const tag = ordered ? "ol" : "ul";
        const start = ordered && parseInt(m[2], 10) !== 1 ? ` start="${parseInt(m[2], 10)}"` : "";
        html += `<${tag}${start}>` + items.map((t) => `<li>${inline(t)}</li>`).join("") + `</${tag}>`;
      } else if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1])) {
        html += "<table><thead><tr>" + cells(line).map((c) => `<th>${c}</th>`).join("") + "</tr></thead><tbody>";
        for (i += 2; i < lines.length && lines[i].includes("|") && lines[i].trim(); ++i)
          html += "<tr>" + cells(lines[i]).map((c) => `<td>${c}</td>`).join("") + "</tr>";
        html += "</tbody></table>";
      } else {
        const body = [];
        for (; i < lines.length && !/^\s*$/.test(lines[i]) && (body.length === 0 || !startsBlock(lines[i])); ++i)
          body.push(lines[i]);
        html += `<p>${body.map(inline).join("<br>")}</p>`;
      }
    }
    return html;
  }

  return { render, escape };
})();
