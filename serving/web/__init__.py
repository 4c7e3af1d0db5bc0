"""The browser side of the API: storefront, admin console and offline API docs.

    pages.py    HTML pages (/, /product/{id}, /admin, a friendly 404), the offline Swagger UI
                and ReDoc (/docs, /redoc) and the static assets under /web and /docs-assets
    shop.py     the storefront's small JSON API under /shop/api: the visitor cookie, demo
                log-in, catalogue pages, events bound to the cookie, placeholder images
    static/     plain HTML, CSS and JavaScript; no build step, no external fonts or CDNs

The pages call the public JSON API (/v1/...) from the browser; nothing here is on the hot
path, and these routes are registered after the /v1 routes.
"""
