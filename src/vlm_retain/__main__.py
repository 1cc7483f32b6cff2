"""Allow ``python -m vlm_retain`` as a synonym of the ``vlm-retain`` command."""

from vlm_retain.cli.main import main

if __name__ == "__main__":
    main()
