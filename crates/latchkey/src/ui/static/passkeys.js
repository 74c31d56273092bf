// Passkeys (WebAuthn) for the login page (#passkey-login), the second
// sign-in step (#passkey-mfa) and the account page (#passkey-register). Served by Latchkey itself (CSP script-src 'self').
// The server speaks JSON with binary fields as base64url; the browser's
// WebAuthn API wants ArrayBuffers: this file converts between the two and
// turns failures into sentences a person can act on.
"use strict";

(function () {
  var MESSAGES = {
    unsupported: "This browser does not support passkeys. Sign in with your email and password, or use an up-to-date browser.",
    cancelled: "The passkey request was cancelled or timed out. Try again when you are ready.",
    unknown: "This passkey is not registered here. Sign in with your password, then add it on your account page.",
    insecure: "Passkeys only work on a secure address reached by name (https://, or http://localhost), not an IP address.",
    duplicate: "This authenticator already holds a passkey for your account.",
    failed: "Something went wrong with the passkey. Please try again."
  };

  function b64urlToBuffer(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) base64 += "=";
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function bufferToB64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function supported() {
    return !!(window.PublicKeyCredential && navigator.credentials && navigator.credentials.create);
  }

  function decodeDescriptors(list) {
    return (list || []).map(function (d) {
      return Object.assign({}, d, { id: b64urlToBuffer(d.id) });
    });
  }

  // JSON nulls are not "absent" to WebIDL (null becomes the string "null"
  // or a TypeError): drop them before handing options to the browser.
  function withoutNulls(value) {
    if (Array.isArray(value)) return value.map(withoutNulls);
    if (value && typeof value === "object") {
      var out = {};
      Object.keys(value).forEach(function (key) {
        if (value[key] !== null && value[key] !== undefined) out[key] = withoutNulls(value[key]);
      });
      return out;
    }
    return value;
  }

  function creationOptions(publicKey) {
    publicKey = withoutNulls(publicKey);
    var options = Object.assign({}, publicKey);
    options.challenge = b64urlToBuffer(publicKey.challenge);
    options.user = Object.assign({}, publicKey.user, { id: b64urlToBuffer(publicKey.user.id) });
    options.excludeCredentials = decodeDescriptors(publicKey.excludeCredentials);
    return options;
  }

  function requestOptions(publicKey) {
    publicKey = withoutNulls(publicKey);
    var options = Object.assign({}, publicKey);
    options.challenge = b64urlToBuffer(publicKey.challenge);
    options.allowCredentials = decodeDescriptors(publicKey.allowCredentials);
    return options;
  }

  function extensionResults(credential) {
    try {
      return credential.getClientExtensionResults() || {};
    } catch (e) {
      return {};
    }
  }

  function encodeRegistration(credential) {
    var response = credential.response;
    return {
      id: credential.id,
      rawId: bufferToB64url(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: bufferToB64url(response.attestationObject),
        clientDataJSON: bufferToB64url(response.clientDataJSON),
        transports: typeof response.getTransports === "function" ? response.getTransports() : undefined
      },
      extensions: extensionResults(credential)
    };
  }

  function encodeAssertion(credential) {
    var response = credential.response;
    return {
      id: credential.id,
      rawId: bufferToB64url(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: bufferToB64url(response.authenticatorData),
        clientDataJSON: bufferToB64url(response.clientDataJSON),
        signature: bufferToB64url(response.signature),
        userHandle: response.userHandle ? bufferToB64url(response.userHandle) : null
      },
      extensions: extensionResults(credential)
    };
  }

  // POSTs JSON; resolves to {ok, status, body}.
  function post(url, csrf, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, "Accept": "application/json" },
      body: JSON.stringify(body || {})
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (json) {
        return { ok: response.ok, status: response.status, body: json };
      });
    });
  }

  // A message for a failure of navigator.credentials.* (a DOMException).
  function browserMessage(error, creating) {
    var name = error && error.name;
    if (name === "NotAllowedError" || name === "AbortError") return MESSAGES.cancelled;
    if (name === "SecurityError") return MESSAGES.insecure;
    if (name === "InvalidStateError" && creating) return MESSAGES.duplicate;
    if (name === "NotSupportedError") return MESSAGES.unsupported;
    return MESSAGES.failed;
  }

  // A message for a failed server answer.
  function serverMessage(answer) {
    if (answer.body && answer.body.error === "unknown_credential") return MESSAGES.unknown;
    return (answer.body && answer.body.message) ? capitalize(answer.body.message) + "." : MESSAGES.failed;
  }

  function capitalize(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function say(status, text, isError) {
    if (!status) return;
    status.textContent = text;
    status.className = isError ? "error" : "notice";
    status.setAttribute("role", isError ? "alert" : "status");
  }

  // ---- Login page: a button (modal) and autofill (conditional mediation).
  function setUpLogin(root) {
    var csrf = root.getAttribute("data-csrf");
    var next = root.getAttribute("data-next") || "/account";
    var button = document.getElementById("passkey-sign-in");
    var status = document.getElementById("passkey-status");
    if (!supported()) {
      say(status, MESSAGES.unsupported, false);
      return;
    }
    var pending = null;      // a started ceremony not yet used for a finish
    var autofill = null;     // {controller, done} of the conditional request
    var busy = false;

    function start() {
      return post("/login/passkey/start", csrf).then(function (answer) {
        if (!answer.ok) {
          var error = new Error(serverMessage(answer));
          error.answer = answer;
          throw error;
        }
        return answer.body;
      });
    }

    function finish(ceremony, credential) {
      say(status, "Checking your passkey…", false);
      return post("/login/passkey/finish", csrf, {
        ceremony: ceremony,
        credential: encodeAssertion(credential),
        next: next
      }).then(function (answer) {
        if (answer.ok) {
          say(status, "Signed in. Redirecting…", false);
          window.location.assign(answer.body.redirect || next);
          return true;
        }
        say(status, serverMessage(answer), true);
        return false;
      });
    }

    function take() {
      var started = pending;
      pending = null;
      return started ? Promise.resolve(started) : start();
    }

    function startAutofill() {
      if (!PublicKeyCredential.isConditionalMediationAvailable) return;
      PublicKeyCredential.isConditionalMediationAvailable().then(function (available) {
        if (!available) return;
        return take().then(function (started) {
          var controller = new AbortController();
          var done = navigator.credentials.get({
            publicKey: requestOptions(started.publicKey),
            mediation: "conditional",
            signal: controller.signal
          }).then(function (credential) {
            autofill = null;
            return finish(started.ceremony, credential).then(function (ok) {
              if (!ok) startAutofill();
            });
          }, function () {
            if (controller.signal.aborted) {
              pending = pending || started; // never answered: reusable by the button
              return;
            }
            // The autofill request ended without anyone choosing a passkey
            // (none available, or the browser gave up on it). The person has
            // not done anything yet: say nothing; the button still works.
            autofill = null;
          });
          autofill = { controller: controller, done: done };
        });
      }).catch(function () { /* autofill is an extra; the button still works */ });
    }

    button.addEventListener("click", function () {
      if (busy) return;
      busy = true;
      say(status, "Follow your browser's instructions to use your passkey…", false);
      var stopAutofill = Promise.resolve();
      if (autofill) {
        autofill.controller.abort();
        stopAutofill = autofill.done.catch(function () {});
        autofill = null;
      }
      stopAutofill.then(take).then(function (started) {
        return navigator.credentials.get({ publicKey: requestOptions(started.publicKey) })
          .then(function (credential) {
            return finish(started.ceremony, credential);
          }, function (error) {
            say(status, browserMessage(error, false), true);
            return false;
          });
      }).catch(function (error) {
        say(status, error.message || MESSAGES.failed, true);
        return false;
      }).then(function (ok) {
        busy = false;
        if (!ok) startAutofill();
      });
    });

    // One ceremony up front: it tells whether passkeys are enabled on this
    // server (the button stays hidden if not) and serves the first attempt.
    start().then(function (started) {
      pending = started;
      button.hidden = false;
      startAutofill();
    }, function (error) {
      if (error.answer && error.answer.body && error.answer.body.error === "passkeys_unavailable") return;
      button.hidden = false;
    });
  }

  // ---- Account page: add a passkey.
  function setUpRegistration(root) {
    var csrf = root.getAttribute("data-csrf");
    var button = document.getElementById("add-passkey");
    var nameInput = document.getElementById("passkey-name");
    var status = document.getElementById("passkey-status");
    button.addEventListener("click", function () {
      if (!supported()) {
        say(status, MESSAGES.unsupported, true);
        return;
      }
      button.disabled = true;
      say(status, "Follow your browser's instructions to create a passkey…", false);
      post("/account/passkeys/register/start", csrf).then(function (answer) {
        if (answer.status === 403 && answer.body.error === "reauthentication_required") {
          window.location.assign(answer.body.location || root.getAttribute("data-reauth"));
          return;
        }
        if (!answer.ok) {
          say(status, serverMessage(answer), true);
          return;
        }
        var started = answer.body;
        return navigator.credentials.create({ publicKey: creationOptions(started.publicKey) })
          .then(function (credential) {
            return post("/account/passkeys/register/finish", csrf, {
              ceremony: started.ceremony,
              credential: encodeRegistration(credential),
              name: nameInput ? nameInput.value : ""
            }).then(function (finished) {
              if (finished.ok) {
                say(status, "Passkey added.", false);
                window.location.assign("/account/passkeys");
              } else {
                say(status, serverMessage(finished), true);
              }
            });
          }, function (error) {
            say(status, browserMessage(error, true), true);
          });
      }).catch(function () {
        say(status, MESSAGES.failed, true);
      }).then(function () {
        button.disabled = false;
      });
    });
  }

  // ---- Second sign-in step: a passkey after the password (/login/mfa).
  function setUpSecondFactor(root) {
    var csrf = root.getAttribute("data-csrf");
    var next = root.getAttribute("data-next") || "/account";
    var button = document.getElementById("passkey-second-factor");
    var status = document.getElementById("passkey-status");
    if (!supported()) {
      button.hidden = true;
      say(status, MESSAGES.unsupported, false);
      return;
    }
    button.addEventListener("click", function () {
      button.disabled = true;
      say(status, "Follow your browser's instructions to use your passkey…", false);
      post("/login/mfa/passkey/start", csrf).then(function (answer) {
        if (!answer.ok) {
          say(status, secondStepMessage(answer), true);
          return;
        }
        var started = answer.body;
        return navigator.credentials.get({ publicKey: requestOptions(started.publicKey) })
          .then(function (credential) {
            say(status, "Checking your passkey…", false);
            return post("/login/mfa/passkey/finish", csrf, {
              ceremony: started.ceremony,
              credential: encodeAssertion(credential),
              next: next
            }).then(function (finished) {
              if (finished.ok) {
                say(status, "Signed in. Redirecting…", false);
                window.location.assign(finished.body.redirect || next);
              } else {
                say(status, secondStepMessage(finished), true);
              }
            });
          }, function (error) {
            say(status, browserMessage(error, false), true);
          });
      }).catch(function () {
        say(status, MESSAGES.failed, true);
      }).then(function () {
        button.disabled = false;
      });
    });
  }

  function secondStepMessage(answer) {
    if (answer.body && answer.body.error === "mfa_expired") {
      return "This sign-in has expired. Start again from the sign-in page.";
    }
    if (answer.body && answer.body.error === "unknown_credential") {
      return "This passkey is not one of yours. Use another passkey or a code.";
    }
    return serverMessage(answer);
  }

  var login = document.getElementById("passkey-login");
  if (login) setUpLogin(login);
  var secondFactor = document.getElementById("passkey-mfa");
  if (secondFactor) setUpSecondFactor(secondFactor);
  var register = document.getElementById("passkey-register");
  if (register) setUpRegistration(register);
})();
