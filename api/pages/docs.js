// Swagger UI on this daemon's OpenAPI document. The document names no server, so "Try it
// out" sends requests to the origin that served this page. validatorUrl null keeps Swagger
// UI from asking a validator on the internet about the document.
'use strict';
window.addEventListener('DOMContentLoaded', () => {
  window.ui = SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    validatorUrl: null,
    deepLinking: false,
    defaultModelsExpandDepth: 0,
    onComplete: () => { document.body.dataset.state = 'ready'; },
  });
});
