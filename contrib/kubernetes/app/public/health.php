<?php
// herd sends it to every new worker (warmup.request[] = /health.php in
// deployment.yaml) and lets the worker take traffic only on a 2xx: an
// application that cannot run fails it, and herd refuses the deploy.
header('Content-Type: text/plain');
echo "ok\n";
