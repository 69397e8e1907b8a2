"""Protocol codecs: KServe v2 and TF Serving REST bodies <-> numpy. Pure, framework-free:
no transport, no ML framework; every function takes bytes or parsed JSON and gives arrays
(or the reverse), raising ``InvalidInputError`` that names what was wrong."""
