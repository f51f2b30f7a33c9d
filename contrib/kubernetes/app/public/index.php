<?php
// The example application of deployment.yaml: stands in for yours, so
// that the image builds and the pod serves as shipped.
header('Content-Type: text/plain');
echo "Hello from herd, pid " . getmypid() . "\n";
