// Swagger UI over this service's OpenAPI document; its files are served by this service.
// The document declares a bearer scheme, so Swagger UI shows its Authorize button: a key typed
// there goes as `Authorization: Bearer` on "Try it out" calls. It is not persisted (no
// localStorage): it lasts as long as the page.
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
                                persistAuthorization: false });
});
