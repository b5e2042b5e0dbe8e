// A button marked data-once submits its form once: a second click while the first request is on
// its way does nothing. The server is idempotent anyway; this only spares people the doubt.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.id === "vote-form" && event.submitter) { vote(event); return; }
  if (form.dataset.submitted) { event.preventDefault(); return; }
  form.dataset.submitted = "1";
  form.querySelectorAll("button[data-once]").forEach((b) => {
    // Disabled after the submit has been dispatched, so the button's own value still goes out.
    setTimeout(() => { b.disabled = true; }, 0);
  });
});

// A personal page (sent with no-store) that the browser restores from its back/forward cache
// would show what was true when it was left — a Pay button on an order since paid, a name after
// signing out. Chrome keeps such pages when the session cookie has not changed, so the page asks
// the server again instead.
window.addEventListener("pageshow", (event) => {
  if (event.persisted && document.body.hasAttribute("data-personal")) window.location.reload();
});

// A conversation open in a page asks the API for messages after the last one it shows, every two
// seconds, and appends them (as text: nothing a message says becomes markup).
const conversation = document.querySelector("ol[data-poll]");
const scroller = document.getElementById("conversation");
const atNewest = () => !scroller || scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 48;
const showNewest = () => {
  if (scroller) scroller.scrollTop = scroller.scrollHeight;
};
// A conversation opens at its newest message with the message box in view (the messages scroll
// in their own box above it), like a chat.
if (scroller) {
  showNewest();
  const box = document.getElementById("post");
  if (box) box.scrollIntoView({ block: "end" });
}
// The API's messages carry no time; one that arrives while the page is open was sent just now.
const utcWords = (at) => {
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const two = (n) => String(n).padStart(2, "0");
  return `${months[at.getUTCMonth()]} ${at.getUTCDate()}, ${two(at.getUTCHours())}:${two(at.getUTCMinutes())} UTC`;
};
if (conversation) {
  const poll = async () => {
    try {
      const after = conversation.dataset.after || "0";
      const response = await fetch(`${conversation.dataset.poll}?after=${after}&limit=100`, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const following = atNewest();
        for (const message of await response.json()) {
          if (document.getElementById(`m${message.number}`)) continue;
          const item = document.createElement("li");
          item.id = `m${message.number}`;
          const number = document.createElement("a");
          number.className = "num";
          number.href = `#m${message.number}`;
          number.textContent = `#${message.number}`;
          const text = document.createElement("span");
          text.className = "text";
          text.textContent = message.body;
          const when = document.createElement("time");
          const now = new Date();
          when.className = "when";
          when.dateTime = now.toISOString();
          when.textContent = utcWords(now);
          item.append(number, " ", text, " ", when);
          conversation.append(item);
          conversation.dataset.after = String(message.number);
          document.getElementById("no-messages")?.remove();
        }
        // Someone reading older messages is not pulled away from them.
        if (following) showNewest();
      }
    } finally {
      setTimeout(poll, 2000);
    }
  };
  setTimeout(poll, 2000);
}

// A payment still in flight: its status is asked for every two seconds and updated in place (a
// polite live region tells screen readers); once final, the page is loaded again to show the
// outcome in full. Without JavaScript, a meta refresh in <noscript> does the same.
// Each status still to settle (a payment, a pending refund) asks its URL every 2 s and changes in
// place; once one is final the page is reloaded for everything that came with it.
document.querySelectorAll("[data-status-url]").forEach((paymentStatus) => {
  const poll = async () => {
    try {
      const response = await fetch(paymentStatus.dataset.statusUrl, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const state = await response.json();
        if (state.final) { window.location.reload(); return; }
        if (paymentStatus.textContent !== state.word) {
          paymentStatus.textContent = state.word;
          paymentStatus.className = `status status-${state.word}`;
        }
      }
    } catch (_) { /* offline for a moment: ask again */ }
    setTimeout(poll, 2000);
  };
  setTimeout(poll, 2000);
});

// A thread's comments carry only a link and "reply" (each comment's bytes are repeated hundreds of
// times). For someone signed in, the page says who they are and which comments they voted for,
// and the controls are drawn here: upvote or undo on others' comments, edit and delete on their
// own. Without script a comment's link opens its own page, which offers the same.
const thread = document.querySelector("#comments[data-me]");
if (thread) {
  const voted = new Set(thread.dataset.voted.split(" ").filter(Boolean));
  const control = (tag, className, label, text) => {
    const element = document.createElement(tag);
    element.className = className;
    element.setAttribute("aria-label", label);
    element.textContent = text;
    return element;
  };
  thread.querySelectorAll("article.comment:not(.deleted)").forEach((comment) => {
    const id = comment.id.slice(1);
    const author = comment.querySelector(":scope > .meta .author").textContent;
    const controls = comment.querySelector(":scope > .controls");
    const reply = controls.querySelector(".reply-link");
    if (comment.dataset.author === thread.dataset.me) {
      for (const [what, text] of [["edit", "edit"], ["delete", "delete"]]) {
        const link = control("a", `${what}-link`, `${text[0].toUpperCase()}${text.slice(1)} your comment ${id}`, text);
        link.href = `/comments/${id}/${what}`;
        controls.append(" ", link);
      }
      return;
    }
    for (const [what, className, label, text] of [["upvote", "vote link", "Upvote", "▲ upvote"], ["unvote", "unvote link", "Undo upvote on", "undo upvote"]]) {
      const button = control("button", className, `${label} ${author}'s comment ${id}`, text);
      button.type = "submit";
      button.setAttribute("form", "vote-form");
      button.setAttribute("formaction", `/comments/${id}/${what}`);
      button.dataset.comment = id;
      button.style.display = (what === "unvote") === voted.has(id) ? "inline" : "none";
      controls.insertBefore(button, reply);
      controls.insertBefore(document.createTextNode(" "), reply);
    }
  });
}

// Votes on a thread page are sent without leaving the page: the count changes in place and
// "upvote" becomes "undo upvote" (and back), keeping the keyboard focus on the control. Without
// JavaScript the same buttons post the form and the page comes back at the comment.
async function vote(event) {
  event.preventDefault();
  const button = event.submitter;
  const form = event.target;
  if (button.dataset.busy) return;
  button.dataset.busy = "1";
  try {
    // URL-encoded, as the form itself would send it (FormData alone would be multipart).
    const response = await fetch(button.formAction, { method: "POST", body: new URLSearchParams(new FormData(form)), headers: { Accept: "application/json" } });
    const result = await response.json();
    const comment = document.getElementById(`c${button.dataset.comment}`);
    if (!response.ok) { window.alert(result.error || "The vote could not be counted. Please reload the page."); return; }
    const points = comment.querySelector(":scope > .meta .points");
    points.textContent = `${result.points} point${result.points === 1 ? "" : "s"}`;
    const upvote = comment.querySelector(":scope > .controls .vote");
    const undo = comment.querySelector(":scope > .controls .unvote");
    upvote.style.display = result.voted ? "none" : "inline";
    undo.style.display = result.voted ? "inline" : "none";
    (result.voted ? undo : upvote).focus();
  } catch (_) {
    form.action = button.formAction;
    form.submit();
  } finally {
    delete button.dataset.busy;
  }
}

// "Print receipt" buttons.
document.querySelectorAll("[data-print]").forEach((button) => button.addEventListener("click", () => window.print()));

// In a chat's message box Enter sends and Shift+Enter starts a new line (nothing is sent while an
// input method is still composing a character).
const messageBox = document.querySelector("#post textarea[name=body]");
if (messageBox) {
  messageBox.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (messageBox.value.trim() !== "") messageBox.form.requestSubmit();
  });
}

// The one-time notice stays at the top of the window while the page scrolls. The comment a link
// points to ("Your comment was posted.") is scrolled to just below it, however many lines the
// notice takes on a narrow screen, so the notice never covers what it is about.
const flash = document.getElementById("flash");
if (flash) {
  document.documentElement.style.setProperty("--flash-height", `${flash.offsetHeight}px`);
  const target = window.location.hash.length > 1 ? document.getElementById(window.location.hash.slice(1)) : null;
  if (target) target.scrollIntoView({ block: "start" });
}
