#!/usr/bin/perl
# An FCGI::ProcManager worker as its documentation writes one: pm_manage
# forks n_processes servers, which all accept on the listening socket the
# manager passes as fd 0. FCGI::ProcManager reads no setting from the
# environment or the command line, so the script says how many: HERD_SLOTS
# when set, else 2. Body and `?ms=N` as in perl_fcgi.pl.
use strict;
use warnings;
use FCGI;
use FCGI::ProcManager qw(pm_manage pm_pre_dispatch pm_post_dispatch);
use Time::HiRes ();

# Accept replaces %ENV with the request's params: read the worker's own
# environment first.
my $gen = $ENV{HERD_GENERATION} // '';
pm_manage(n_processes => $ENV{HERD_SLOTS} || 2);
my $request = FCGI::Request();
while ($request->Accept() >= 0) {
    pm_pre_dispatch();
    my ($ms) = ($ENV{QUERY_STRING} // '') =~ /(?:^|&)ms=(\d+)/;
    my $end = Time::HiRes::time() + ($ms // 0) / 1000;
    while ((my $left = $end - Time::HiRes::time()) > 0) { Time::HiRes::sleep($left) }
    print "Content-Type: text/plain\r\n\r\nlib=procmanager pid=$$ gen=$gen";
    pm_post_dispatch();
}
