"""{{ cookiecutter.description | docstring_text }}"""
