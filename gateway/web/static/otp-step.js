/* otp-step.js: the drop-in code-entry step of otp-gateway (no framework, no build step).
 *
 * It improves a plain HTML form that already works without JavaScript (docs/frontend.md):
 *   <form data-otp-step data-expires-in="300" data-resend-after="30"
 *         data-resend-url="/code/renvoi" data-code-length="6"
 *         data-messages-url="/static/otp-step.fr.json"> ... </form>
 * What it adds: a countdown to the code's expiry and to "Renvoyer le code" (announced
 * politely, once a minute, not every second), "Renvoyer le code" and "M'appeler plutôt"
 * without leaving the page (a JSON POST to data-resend-url of {"channel"?} and the form's
 * hidden fields, e.g. its CSRF token, which the front end's server proxies to
 * POST /challenge/{id}/resend with its own API key), the Web OTP API where the
 * browser has it, a check of the code's form before it is sent, and every API error as a
 * French sentence (otp-step.fr.json, the one table) tied to the field.
 * Times are counted from the page's own load (seconds, not dates): a wrong clock on the
 * computer changes nothing.
 */
(function () {
  "use strict";

  var TICK_MS = 1000;

  function wait(seconds) {
    // "30 secondes", "3 minutes", "2 heures": rounded up, as the API's retry_after is.
    if (seconds < 60) return seconds + (seconds > 1 ? " secondes" : " seconde");
    var minutes = Math.ceil(seconds / 60);
    if (minutes < 60) return minutes + (minutes > 1 ? " minutes" : " minute");
    var hours = Math.ceil(minutes / 60);
    return hours + (hours > 1 ? " heures" : " heure");
  }

  function remaining(seconds) {
    // "4 min 05 s" for the eye; the live region gets wait() instead.
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return m > 0 ? m + " min " + (s < 10 ? "0" : "") + s + " s" : s + " s";
  }

  function sentence(table, body) {
    // The one table: errors by code, rate limits by scope, the last attempt apart.
    var errors = (table && table.errors) || {};
    var code = (body && body.error) || "default";
    var text = errors[code];
    if (code === "rate_limited" && table && table.rate_limited && table.rate_limited[body.scope]) {
      text = table.rate_limited[body.scope];
    }
    if (code === "invalid_code" && body.attempts_left === 1 && errors.invalid_code_last) {
      text = errors.invalid_code_last;
    }
    text = text || errors["default"] || "Une erreur est survenue. Réessayez.";
    return text
      .replace("{attempts_left}", String(body && body.attempts_left))
      .replace("{wait}", wait(Math.max(1, Number((body && body.retry_after) || 1))));
  }

  function Step(form) {
    this.form = form;
    this.input = form.querySelector("input[name=code]");
    this.error = form.querySelector("[data-otp-error]");
    this.status = form.querySelector("[data-otp-status]");
    this.expiry = form.querySelector("[data-otp-expiry]");
    this.hint = form.querySelector("[data-otp-resend-hint]");
    this.destination = form.querySelector("[data-otp-destination]");
    this.channel = form.querySelector("[data-otp-channel]");
    this.resends = form.querySelectorAll("[data-otp-resend]");
    this.length = Number(form.getAttribute("data-code-length")) || 6;
    this.table = null;
    this.busy = false;
    this.restart(Number(form.getAttribute("data-expires-in")) || 0,
      Number(form.getAttribute("data-resend-after")) || 0);
  }

  Step.prototype.restart = function (expiresIn, resendAfter) {
    var now = Date.now();
    this.expiresAt = now + expiresIn * 1000;
    this.resendAt = now + resendAfter * 1000;
    this.lastMinute = Math.ceil(expiresIn / 60);
    this.resendOpen = resendAfter <= 0;
    this.expired = expiresIn <= 0;
  };

  Step.prototype.start = function () {
    var self = this;
    this.loadTable();
    this.form.addEventListener("submit", function (event) { self.onSubmit(event); });
    this.input.addEventListener("input", function () { self.clearError(); });
    this.tick(true);
    this.timer = window.setInterval(function () { self.tick(false); }, TICK_MS);
    this.webOtp();
  };

  Step.prototype.loadTable = function () {
    var self = this, url = this.form.getAttribute("data-messages-url");
    if (!url || !window.fetch) return;
    fetch(url, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (table) { self.table = table; })
      .catch(function () { /* the sentences fall back to the default one */ });
  };

  Step.prototype.tick = function (first) {
    var now = Date.now();
    var left = Math.max(0, Math.ceil((this.expiresAt - now) / 1000));
    var wait_ = Math.max(0, Math.ceil((this.resendAt - now) / 1000));
    if (this.expiry) {
      this.expiry.textContent = left > 0
        ? "Le code expire dans " + remaining(left) + "."
        : "Le code a expiré.";
    }
    this.announceExpiry(left, first);
    this.showResend(wait_, first);
  };

  Step.prototype.announceExpiry = function (left, first) {
    // Politely, at each whole minute, at 30 s and at the end: never every second.
    var minute = Math.ceil(left / 60);
    if (left === 0 && !this.expired) {
      this.expired = true;
      this.say("Le code a expiré. Demandez un nouveau code.");
    } else if (!first && minute < this.lastMinute && left > 30) {
      this.say("Le code expire dans " + wait(minute * 60) + ".");
    } else if (!first && left === 30) {
      this.say("Le code expire dans 30 secondes.");
    }
    this.lastMinute = minute;
  };

  Step.prototype.showResend = function (wait_, first) {
    var open = wait_ === 0;
    for (var i = 0; i < this.resends.length; i++) {
      this.resends[i].setAttribute("aria-disabled", open ? "false" : "true");
    }
    if (this.hint) {
      this.hint.textContent = open
        ? "Vous n'avez rien reçu ? Vous pouvez demander un nouvel envoi."
        : "Vous pourrez demander un nouvel envoi dans " + remaining(wait_) + ".";
    }
    if (open && !this.resendOpen && !first) {
      this.say("Vous pouvez maintenant renvoyer le code ou demander un appel.");
    }
    this.resendOpen = open;
  };

  Step.prototype.say = function (text) {
    if (!this.status) return;
    // Emptied first, so the same sentence twice is announced twice.
    this.status.textContent = "";
    var status = this.status;
    window.setTimeout(function () { status.textContent = text; }, 50);
  };

  Step.prototype.showError = function (text, fieldAtFault) {
    if (this.error) {
      this.error.textContent = text;
      this.error.hidden = false;
    }
    if (fieldAtFault) this.input.setAttribute("aria-invalid", "true");
    this.input.focus();
  };

  Step.prototype.clearError = function () {
    if (this.input.getAttribute("aria-invalid") === "true") {
      this.input.removeAttribute("aria-invalid");
    }
  };

  Step.prototype.onSubmit = function (event) {
    var submitter = event.submitter;
    var action = submitter ? submitter.value : "verify";
    if (action === "resend" || action === "voice") {
      event.preventDefault();
      this.resend(action === "voice" ? "voice" : null);
      return;
    }
    var code = this.input.value.replace(/[\s.-]/g, "");
    if (!new RegExp("^[0-9]{" + this.length + "}$").test(code)) {
      event.preventDefault();
      this.showError("Saisissez les " + this.length + " chiffres du code reçu.", true);
      return;
    }
    this.input.value = code;
    if (this.abort) this.abort.abort();
  };

  Step.prototype.resend = function (channel) {
    var self = this, url = this.form.getAttribute("data-resend-url");
    if (this.busy) return;
    if (!this.resendOpen) {
      this.say(this.hint ? this.hint.textContent : "Patientez avant de demander un nouvel envoi.");
      return;
    }
    this.busy = true;
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(this.hiddenFields(channel))
    }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body }; },
        function () { return { ok: false, body: { error: r.status >= 500 ? "unavailable" : "default" } }; });
    }).then(function (answer) {
      self.busy = false;
      if (answer.ok) self.resent(answer.body);
      else self.failed(answer.body);
    }, function () {
      self.busy = false;
      self.showError(sentence(self.table, { error: "network" }), false);
    });
  };

  Step.prototype.hiddenFields = function (channel) {
    // The form's hidden fields (its CSRF token, whatever its name) go along, as a POST would.
    var body = {}, hidden = this.form.querySelectorAll("input[type=hidden][name]");
    for (var i = 0; i < hidden.length; i++) body[hidden[i].name] = hidden[i].value;
    if (channel) body.channel = channel;
    return body;
  };

  Step.prototype.resent = function (body) {
    this.restart(Number(body.expires_in) || 0, Number(body.resend_after) || 0);
    if (this.destination && body.destination) this.destination.textContent = body.destination;
    var how = body.channel === "voice" ? "par appel vocal au " : "par SMS au ";
    if (this.channel) this.channel.textContent = how;
    if (this.error) { this.error.textContent = ""; this.error.hidden = true; }
    this.clearError();
    this.tick(true);
    this.say(body.channel === "voice"
      ? "Vous allez recevoir un appel au " + body.destination + " : le code vous sera lu."
      : "Le code a été renvoyé par SMS au " + body.destination + ".");
    this.input.focus();
  };

  Step.prototype.failed = function (body) {
    if (body && body.retry_after) {
      this.resendAt = Date.now() + Number(body.retry_after) * 1000;
      this.resendOpen = false;
    }
    this.showError(sentence(this.table, body || {}), false);
  };

  Step.prototype.webOtp = function () {
    // Chrome on Android reads the code from an SMS that ends with "@host #code".
    if (!("OTPCredential" in window) || !window.AbortController) return;
    var self = this;
    this.abort = new AbortController();
    navigator.credentials.get({ otp: { transport: ["sms"] }, signal: this.abort.signal })
      .then(function (credential) {
        if (!credential || !credential.code) return;
        self.input.value = credential.code;
        var verify = self.form.querySelector("button[value=verify]");
        if (self.form.requestSubmit) self.form.requestSubmit(verify || undefined);
      })
      .catch(function () { /* dismissed, or no SMS: the person types the code */ });
  };

  function init() {
    var forms = document.querySelectorAll("form[data-otp-step]");
    for (var i = 0; i < forms.length; i++) {
      if (forms[i].getAttribute("data-otp-ready")) continue;
      forms[i].setAttribute("data-otp-ready", "1");
      new Step(forms[i]).start();
    }
  }

  window.OtpStep = { init: init, sentence: sentence, wait: wait };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
