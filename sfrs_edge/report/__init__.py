"""What a person looks at: the self-contained HTML evaluation report (``html``), pictures of
answers and maps (``pictures``) and the OpenCV-only charts and tiles they are drawn with
(``plots``; no matplotlib at run time)."""
