"""Run the development server.

Usage: python -m {{ cookiecutter.package_name }}
"""

from .app import create_app


def main() -> None:
    app = create_app()
    app.run(host="127.0.0.1", port=app.config["SETTINGS"].port, debug=False)


if __name__ == "__main__":
    main()
