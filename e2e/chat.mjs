#!/usr/bin/env node
// Drive one chat turn in OpenWebUI 0.12.4 with a real (Debian) Chromium and report what a user sees.
//
// Usage:  node e2e/chat.mjs '<json>'      (or the JSON on stdin when no argument is given)
//
// JSON arguments:
//   url            OpenWebUI base URL, e.g. "http://127.0.0.1:8080"           (required)
//   email, password  an existing account (sign up through the API beforehand)  (required)
//   model          model id to select, e.g. a pipe Function id                  (required)
//   prompt         the user message                                             (required)
//   screenshotDir  where PNGs go (created); omitted: no screenshots
//   stopAfterMs    press the stop button this long after sending; omitted: let it finish
//   sampleIntervalMs  poll period while streaming (default 100)
//   timeoutMs      give up waiting for the answer after this long (default 120000)
//   settleMs       after the stream ends, wait this long before the final read (default 1000)
//   executablePath browser binary (default /usr/bin/chromium)
//   images         [{name, type, base64}]: pictures pasted into the chat input (a ClipboardEvent carrying the
//                  files, as a pasted screenshot) before the prompt is typed; the run waits for their previews
//   traceText      sample the last assistant message inside the page every traceIntervalMs (default 100)
//                  from the send until the answer ends, with a page timer (not disturbed by this script's
//                  polling or screenshots); adds the textTrace report field
//
// Prints exactly ONE JSON object on stdout; exits 0 when the run completed (whatever it observed),
// 1 on a harness error ("ok": false, "error": stack trace). Fields:
//   ok, error?, chatUrl, selectedModel (aria-label of the model button), whatsNewDismissed
//   menuOptions[]  the model menu's entries when it opened: {value (the model id), text}
//   samples[]      one per visible change while streaming: {tMs (since send), textLength, text (last 80
//                  chars), status, reasoning, done, stopVisible}
//   statusTexts[]  distinct status-line texts seen;  reasoningTexts[] distinct reasoning-block headers
//                  ("Thinking...", "Thought for ..."); blockTexts[] all collapsible headers seen
//   stopPressedAtMs, stopped
//   final, reload  snapshots of the last assistant message after the end / after a page reload:
//                  {present, messageId, status, reasoning, blocks[], text, done, stopVisible}
//   timings        {loginMs, sentMs, firstStatusMs, firstTextMs, streamEndMs, totalMs}
//   screenshots[]  PNG paths (status, streaming, final|stopped, reload, error)
//   consoleErrors[] browser console errors (first 20)
//   textTrace      (traceText only) {intervalMs, ticks, maxTickGapMs (the page timer's worst delay),
//                  states[] (each distinct answer text: {tMs, length, words}), distinctStates,
//                  firstTextMs, lastTextMs, gapMs {median, p90, max} between text changes,
//                  wordsPerChange {median, mean, max}, thinkingStatusMs (the status line reading
//                  "Thinking..." on screen), thinkingReasoningMs (the reasoning block's own "Thinking"
//                  header), thinkingBothMs (both at once), statusLines[] ({text, fromMs, toMs})}

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-dev-shm-usage',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

// Selectors (OpenWebUI 0.12.4 DOM), kept together so a version bump is one edit.
const SEL = {
  email: '#email',
  password: '#password',
  submit: 'button[type=submit]',
  chatInput: '#chat-input',
  sendButton: '#send-message-button',
  stopButton: '#message-input-container button[aria-label="Stop"]',
  modelButton: '#model-selector-model-button',
  modelOption: (id) => `button[role=option][data-value=${JSON.stringify(id)}]`,
  whatsNewOk: "Okay, Let's Go!",
};

function readArgs() {
  const raw = process.argv[2] ?? fs.readFileSync(0, 'utf8');
  const args = JSON.parse(raw);
  for (const key of ['url', 'email', 'password', 'model', 'prompt']) {
    if (typeof args[key] !== 'string' || !args[key]) throw new Error(`missing string argument: ${key}`);
  }
  return {
    sampleIntervalMs: 100,
    timeoutMs: 120000,
    settleMs: 1000,
    executablePath: '/usr/bin/chromium',
    traceText: false,
    traceIntervalMs: 100,
    ...args,
  };
}

// Runs in the page: what the last assistant message shows right now.
function snapshotInPage() {
  const msgs = document.querySelectorAll('.chat-assistant');
  const stopVisible = !!document.querySelector('#message-input-container button[aria-label="Stop"]');
  if (!msgs.length) return { present: false, stopVisible };
  const m = msgs[msgs.length - 1];
  const root = m.closest('[id^="message-"]') ?? m;
  const statusButton = m.querySelector('button[aria-label="Toggle status history"]');
  const container = m.querySelector('#response-content-container');
  const blocks = [];
  let text = '';
  if (container) {
    // Collapsible blocks (reasoning, tool calls): a wrapper whose direct child is an aria-expanded button.
    const wrappers = [...container.querySelectorAll('div:has(> button[aria-expanded])')];
    for (const w of wrappers) {
      const b = w.querySelector(':scope > button[aria-expanded]');
      blocks.push((b?.innerText ?? '').trim());
    }
    const prose = [...container.querySelectorAll('.markdown-prose')].filter(
      (p) => !p.parentElement?.closest('div:has(> button[aria-expanded])'),
    );
    if (prose.length) {
      text = prose.map((p) => p.innerText).join('\n').trim();
    } else {
      // Fallback: everything in the container minus the block headers.
      text = container.innerText;
      for (const h of blocks) text = text.replace(h, '');
      text = text.trim();
    }
  }
  const reasoning = blocks.find((h) => /^(Thinking|Thought for)/i.test(h)) ?? null;
  return {
    present: true,
    messageId: root.id || null,
    status: statusButton ? statusButton.innerText.trim() : null,
    reasoning,
    blocks,
    text,
    done: !!root.querySelector('.copy-response-button'),
    stopVisible,
  };
}

// Runs in the page (as source text): every intervalMs, record the last assistant message when it changed.
function installTracer(snapshot, intervalMs) {
  const trace = { intervalMs, t0: performance.now(), ticks: 0, maxTickGapMs: 0, changes: [] };
  let lastKey = null;
  let lastTick = null;
  trace.timer = setInterval(() => {
    const now = performance.now();
    if (lastTick !== null) trace.maxTickGapMs = Math.max(trace.maxTickGapMs, now - lastTick);
    lastTick = now;
    trace.ticks += 1;
    const s = snapshot();
    if (!s.present) return;
    const key = JSON.stringify([s.text, s.status, s.reasoning, s.done, s.stopVisible]);
    if (key === lastKey) return;
    lastKey = key;
    trace.changes.push({
      tMs: Math.round(now - trace.t0),
      text: s.text,
      status: s.status,
      reasoning: s.reasoning,
      done: s.done,
      stopVisible: s.stopVisible,
    });
  }, intervalMs);
  window.__lettaStreamTrace = trace;
}

// Runs in the page: stop the tracer, return what it recorded.
function collectTrace() {
  const trace = window.__lettaStreamTrace;
  if (!trace) return null;
  clearInterval(trace.timer);
  const { timer, ...rest } = trace;
  return { ...rest, endMs: Math.round(performance.now() - trace.t0) };
}

const wordCount = (text) => (text.trim() ? text.trim().split(/\s+/).length : 0);

function quantile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

// The figures of a trace: how the answer grew, and how long each "Thinking" indicator was on screen.
function analyseTrace(raw) {
  const changes = raw.changes;
  const states = [];
  for (const c of changes) {
    if (c.text && (!states.length || c.text !== states[states.length - 1].text)) {
      states.push({ tMs: c.tMs, text: c.text });
    }
  }
  const gaps = states.slice(1).map((s, i) => s.tMs - states[i].tMs);
  const words = states.map((s) => wordCount(s.text));
  const perChange = words.map((w, i) => w - (i ? words[i - 1] : 0));
  const sortedGaps = [...gaps].sort((a, b) => a - b);
  const sortedWords = [...perChange].sort((a, b) => a - b);
  // Each change's state lasts until the next change (the last one until the trace ended).
  let thinkingStatusMs = 0;
  let thinkingReasoningMs = 0;
  let thinkingBothMs = 0;
  const statusLines = [];
  changes.forEach((c, i) => {
    const until = i + 1 < changes.length ? changes[i + 1].tMs : raw.endMs;
    const span = until - c.tMs;
    const statusThinking = /^Thinking/i.test(c.status ?? '');
    const reasoningThinking = /^Thinking/i.test(c.reasoning ?? '');
    if (statusThinking) thinkingStatusMs += span;
    if (reasoningThinking) thinkingReasoningMs += span;
    if (statusThinking && reasoningThinking) thinkingBothMs += span;
    const last = statusLines[statusLines.length - 1];
    if (c.status && last && last.text === c.status && last.toMs === c.tMs) last.toMs = until;
    else if (c.status) statusLines.push({ text: c.status, fromMs: c.tMs, toMs: until });
  });
  return {
    intervalMs: raw.intervalMs,
    ticks: raw.ticks,
    maxTickGapMs: Math.round(raw.maxTickGapMs),
    states: states.map((s, i) => ({ tMs: s.tMs, length: s.text.length, words: words[i] })),
    distinctStates: states.length,
    firstTextMs: states.length ? states[0].tMs : null,
    lastTextMs: states.length ? states[states.length - 1].tMs : null,
    gapMs: { median: quantile(sortedGaps, 0.5), p90: quantile(sortedGaps, 0.9), max: sortedGaps.at(-1) ?? null },
    wordsPerChange: {
      median: quantile(sortedWords, 0.5),
      mean: perChange.length ? words.at(-1) / perChange.length : null,
      max: sortedWords.at(-1) ?? null,
    },
    thinkingStatusMs,
    thinkingReasoningMs,
    thinkingBothMs,
    statusLines,
  };
}

async function main() {
  const args = readArgs();
  const t0 = Date.now();
  const since = () => Date.now() - t0;
  const out = {
    ok: false,
    args: { ...args, password: undefined },
    chatUrl: null,
    selectedModel: null,
    whatsNewDismissed: false,
    samples: [],
    statusTexts: [],
    reasoningTexts: [],
    blockTexts: [],
    stopPressedAtMs: null,
    stopped: false,
    final: null,
    reload: null,
    timings: {},
    screenshots: [],
    consoleErrors: [],
  };
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'letta-stream-chromium-'));
  let context = null;
  let page = null;
  const shot = async (name) => {
    if (!args.screenshotDir || !page) return;
    fs.mkdirSync(args.screenshotDir, { recursive: true });
    const file = path.join(args.screenshotDir, `${name}.png`);
    await page.screenshot({ path: file });
    out.screenshots.push(file);
  };
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: args.executablePath,
      headless: true,
      args: FLAGS,
      viewport: { width: 1280, height: 900 },
    });
    context.setDefaultTimeout(30000);
    page = context.pages()[0] ?? (await context.newPage());
    page.on('console', (msg) => {
      if (msg.type() === 'error' && out.consoleErrors.length < 20) out.consoleErrors.push(msg.text().slice(0, 300));
    });

    // Log in (never wait for networkidle: socket.io keeps a connection open).
    await page.goto(`${args.url}/auth`, { waitUntil: 'domcontentloaded' });
    await page.fill(SEL.email, args.email);
    await page.fill(SEL.password, args.password);
    await page.click(SEL.submit);
    await page.waitForSelector(SEL.chatInput);
    out.timings.loginMs = since();

    // "What's New" modal: shown once per user, a moment after the page appears.
    const okButton = page.getByRole('button', { name: SEL.whatsNewOk });
    try {
      await okButton.waitFor({ state: 'visible', timeout: 4000 });
      await okButton.click();
      await okButton.waitFor({ state: 'hidden', timeout: 5000 });
      out.whatsNewDismissed = true;
    } catch {
      // not shown
    }

    // Select the model.
    await page.click(SEL.modelButton);
    await page.waitForSelector(SEL.modelOption(args.model));
    out.menuOptions = await page.$$eval('button[role=option][data-value]', (els) =>
      els.map((el) => ({ value: el.dataset.value, text: el.innerText.trim() })),
    );
    await page.click(SEL.modelOption(args.model));
    out.selectedModel = await page.getAttribute(SEL.modelButton, 'aria-label');

    // Paste the pictures (as a screenshot pasted from the clipboard), then send the prompt.
    await page.click(SEL.chatInput);
    for (const [index, image] of (args.images ?? []).entries()) {
      await page.evaluate((img) => {
        const bytes = Uint8Array.from(atob(img.base64), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], img.name, { type: img.type }));
        const event = new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true });
        document.querySelector('#chat-input').dispatchEvent(event);
      }, image);
      await page.waitForFunction(
        (n) => document.querySelectorAll('#message-input-container img').length >= n,
        index + 1,
        { timeout: 15000 },
      );
    }
    if (args.images?.length) {
      out.pastedPreviews = await page.locator('#message-input-container img').count();
      await shot('pasted');
    }
    await page.keyboard.insertText(args.prompt);
    await page.click(SEL.sendButton);
    const tSend = Date.now();
    out.timings.sentMs = since();
    if (args.traceText) {
      await page.evaluate(`(${installTracer})(${snapshotInPage}, ${Number(args.traceIntervalMs)})`);
    }

    // Sample while streaming.
    let last = null;
    let shotStatus = false;
    let shotStreaming = false;
    const addUnique = (list, value) => {
      if (value && !list.includes(value)) list.push(value);
    };
    while (true) {
      const s = await page.evaluate(snapshotInPage);
      const elapsed = Date.now() - tSend;
      if (s.present) {
        addUnique(out.statusTexts, s.status);
        addUnique(out.reasoningTexts, s.reasoning);
        for (const b of s.blocks) addUnique(out.blockTexts, b);
        const key = JSON.stringify([s.status, s.reasoning, s.text.length, s.done, s.stopVisible]);
        if (key !== last) {
          last = key;
          out.samples.push({
            tMs: elapsed,
            textLength: s.text.length,
            text: s.text.slice(-80),
            status: s.status,
            reasoning: s.reasoning,
            done: s.done,
            stopVisible: s.stopVisible,
          });
          if (out.timings.firstStatusMs === undefined && s.status) out.timings.firstStatusMs = elapsed;
          if (out.timings.firstTextMs === undefined && s.text.length) out.timings.firstTextMs = elapsed;
        }
        if (s.status && !shotStatus && !s.text) {
          shotStatus = true;
          await shot('status');
        }
        if (s.text.length && !shotStreaming && s.stopVisible) {
          shotStreaming = true;
          await shot('streaming');
        }
      }
      if (args.stopAfterMs != null && out.stopPressedAtMs === null && elapsed >= args.stopAfterMs) {
        const stop = page.locator(SEL.stopButton);
        if (await stop.isVisible()) {
          await stop.click();
          out.stopPressedAtMs = Date.now() - tSend;
          out.stopped = true;
        }
      }
      // The end: the stop button is gone and the message shows its action bar (or the stop was pressed).
      if (s.present && !s.stopVisible && (s.done || out.stopped) && elapsed > 300) break;
      if (elapsed > args.timeoutMs) throw new Error(`no end of answer after ${args.timeoutMs} ms`);
      await page.waitForTimeout(args.sampleIntervalMs);
    }
    out.timings.streamEndMs = Date.now() - tSend;
    if (args.traceText) {
      const raw = await page.evaluate(collectTrace);
      if (!raw) throw new Error('the text tracer was lost (did the page navigate?)');
      out.textTrace = analyseTrace(raw);
    }
    await page.waitForTimeout(args.settleMs);
    out.final = await page.evaluate(snapshotInPage);
    out.chatUrl = page.url();
    await shot(out.stopped ? 'stopped' : 'final');

    // Reload and read the persisted message.
    await page.reload({ waitUntil: 'domcontentloaded' });
    try {
      await page.waitForFunction(
        () => {
          const msgs = document.querySelectorAll('.chat-assistant');
          return msgs.length && msgs[msgs.length - 1].querySelector('#response-content-container')?.innerText.trim();
        },
        null,
        { timeout: 20000 },
      );
    } catch {
      // report what is there (maybe an empty message)
    }
    await page.waitForTimeout(500);
    out.reload = await page.evaluate(snapshotInPage);
    await shot('reload');
    out.timings.totalMs = since();
    out.ok = true;
  } catch (err) {
    out.error = String(err?.stack ?? err);
    try {
      await shot('error');
    } catch {
      // ignore
    }
  } finally {
    if (context) await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exitCode = out.ok ? 0 : 1;
}

main().catch((err) => {
  process.stdout.write(`${JSON.stringify({ ok: false, error: String(err?.stack ?? err) })}\n`);
  process.exitCode = 1;
});
