"""The Gradio studio, one module per tab. Importing this package does not import gradio."""
