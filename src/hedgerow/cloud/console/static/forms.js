// Forms with labelled fields whose errors are shown next to the field (and announced).
// Checks run in the browser first; what the API refuses is shown on the field it names.

import { ApiError } from "./api.js";
import { h } from "./dom.js";

export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
export const HANDLER_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$/;
const NAME_RULE = "use 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit";

let formCount = 0;

export function checkName(value, what) {
  if (!value) return `${what} is required`;
  if (!NAME_PATTERN.test(value)) return `invalid ${what} '${value}': ${NAME_RULE}`;
  return null;
}

// Topic filter rules of MQTT: '#' only last and alone in its level, '+' alone in its level.
export function checkTopicFilter(value) {
  if (!value) return "a topic filter is required";
  if (value.length > 65535) return "the topic filter is too long";
  const levels = value.split("/");
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    if (level.includes("#") && (level !== "#" || i !== levels.length - 1)) {
      return `invalid topic filter '${value}': '#' must be the whole last level`;
    }
    if (level.includes("+") && level !== "+") {
      return `invalid topic filter '${value}': '+' must be a whole level`;
    }
  }
  return null;
}

function control(id, spec) {
  const common = {
    id,
    name: spec.name,
    required: spec.required,
    "aria-describedby": `${id}-hint ${id}-error`,
    ...(spec.attrs || {}),
  };
  if (spec.type === "select") {
    return h(
      "select",
      common,
      spec.options.map(([value, text]) =>
        h("option", { value, selected: String(value) === String(spec.value ?? "") }, text),
      ),
    );
  }
  if (spec.type === "textarea") {
    const area = h("textarea", { rows: spec.rows || 3, ...common });
    area.value = spec.value ?? "";
    return area;
  }
  const input = h("input", {
    type: spec.type || "text",
    autocomplete: "off",
    spellcheck: "false",
    list: spec.list ? `${id}-list` : null,
    ...common,
  });
  if (spec.type === "checkbox") input.checked = Boolean(spec.value);
  else if (spec.type !== "file" && spec.value !== undefined) input.value = spec.value;
  return input;
}

// form({label, fields, submit, validate(values) -> {field: message}, onSubmit(values),
//       errorFields: {apiField: fieldName}, defaultField})
export function form(options) {
  formCount += 1;
  const prefix = `f${formCount}`;
  const inputs = {};
  const errors = {};
  const rows = options.fields.map((spec) => {
    const id = `${prefix}-${spec.name}`;
    const input = control(id, spec);
    inputs[spec.name] = input;
    errors[spec.name] = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
    const label = h("label", { for: id }, spec.label);
    const hint = h("p", { class: "hint", id: `${id}-hint` }, spec.hint || "");
    const list = spec.list
      ? h("datalist", { id: `${id}-list` }, spec.list.map((v) => h("option", { value: v })))
      : null;
    const cls = `field${spec.type === "checkbox" ? " field-check" : ""}${spec.wide ? " field-wide" : ""}`;
    return spec.type === "checkbox"
      ? h("div", { class: cls }, input, label, hint, errors[spec.name])
      : h("div", { class: cls }, label, input, list, hint, errors[spec.name]);
  });
  const formError = h("p", { class: "form-error", role: "alert", hidden: true });
  const button = h("button", { type: "submit", class: "primary" }, options.submit);
  const element = h(
    "form",
    { class: options.wide ? "form wide" : "form", "aria-label": options.label, novalidate: true },
    options.title ? h("h3", {}, options.title) : null,
    h("div", { class: "fields" }, rows),
    formError,
    h("div", { class: "actions" }, button, options.extra || null),
  );

  function values() {
    const result = {};
    for (const [name, input] of Object.entries(inputs)) {
      if (input.type === "checkbox") result[name] = input.checked;
      else if (input.type === "file") result[name] = input.files[0] || null;
      else result[name] = input.value.trim();
    }
    return result;
  }

  function clearErrors() {
    for (const [name, p] of Object.entries(errors)) {
      p.hidden = true;
      p.textContent = "";
      inputs[name].removeAttribute("aria-invalid");
    }
    formError.hidden = true;
    formError.textContent = "";
  }

  function setError(name, message) {
    const input = inputs[name];
    if (!input) {
      formError.textContent = message;
      formError.hidden = false;
      return;
    }
    errors[name].textContent = message;
    errors[name].hidden = false;
    errors[name].setAttribute("role", "alert");
    input.setAttribute("aria-invalid", "true");
  }

  function fieldOf(error) {
    const map = options.errorFields || {};
    if (error.field && map[error.field]) {
      const target = map[error.field];
      return typeof target === "function" ? target(error, values()) : target;
    }
    if (error.field && inputs[error.field]) return error.field;
    return options.defaultField || null;
  }

  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const current = values();
    const problems = options.validate ? options.validate(current) : {};
    const names = Object.keys(problems).filter((k) => problems[k]);
    if (names.length) {
      for (const name of names) setError(name, problems[name]);
      (inputs[names[0]] || button).focus();
      return;
    }
    button.disabled = true;
    element.setAttribute("aria-busy", "true");
    try {
      await options.onSubmit(current);
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      const name = fieldOf(exc);
      setError(name, exc.message);
      (inputs[name] || button).focus();
    } finally {
      button.disabled = false;
      element.removeAttribute("aria-busy");
    }
  });

  return { element, inputs, values, setError, clearErrors };
}
