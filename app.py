"""GenEvolve Studio: `python app.py` (also the Hugging Face Space entry point)."""

from app.studio import launch

if __name__ == "__main__":
    launch()
