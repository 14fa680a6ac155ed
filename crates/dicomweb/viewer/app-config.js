/* firstread: OHIF 3.13.2 app config, served at <ROUTER_BASENAME>/app-config.js.
 *
 * Template: the DICOMweb server replaces, byte for byte, every occurrence of
 *   __DICOMWEB_ROOT__    the DICOMweb root as a URL path on the viewer's own origin, no trailing slash
 *                        (e.g. /dicom-web)
 *   __ROUTER_BASENAME__  the path the viewer is mounted at, no trailing slash (e.g. /viewer)
 *   __AUTHORIZATION__    the complete Authorization header value sent with every DICOMweb request
 *                        (e.g. Bearer abc123), or the empty string when auth is off. It must not
 *                        contain ' or \ (a bearer token never does).
 * See README.md next to this file.
 */
(function () {
  var DICOMWEB_ROOT = '__DICOMWEB_ROOT__';
  var AUTHORIZATION = '__AUTHORIZATION__';

  var config = {
    name: 'firstread',
    routerBasename: '__ROUTER_BASENAME__',
    extensions: [],
    modes: [],
    customizationService: {},
    showStudyList: true,
    maxNumberOfWebWorkers: 3,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    groupEnabledModesFirst: true,
    allowMultiSelectExport: false,
    // no "investigational use only" dialog on every visit
    investigationalUseDialog: { option: 'never' },
    maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
    showErrorDetails: 'always',
    defaultDataSourceName: 'firstread',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'firstread',
        configuration: {
          friendlyName: 'firstread',
          name: 'firstread',
          wadoUriRoot: DICOMWEB_ROOT,
          qidoRoot: DICOMWEB_ROOT,
          wadoRoot: DICOMWEB_ROOT,
          qidoSupportsIncludeField: true,
          imageRendering: 'wadors',
          thumbnailRendering: 'wadors',
          enableStudyLazyLoad: true,
          supportsFuzzyMatching: true,
          supportsWildcard: true,
          staticWado: false,
          singlepart: 'bulkdata,video',
          bulkDataURI: { enabled: true, relativeResolution: 'studies' },
          omitQuotationForMultipartRequest: true,
        },
      },
    ],
    httpErrorHandler: function (error) {
      console.warn('DICOMweb request failed', error && error.status);
    },
  };

  if (!AUTHORIZATION) {
    window.config = config;
    return;
  }

  // OHIF 3.13 does not read an Authorization header from the data source config (the v2
  // `requestOptions.auth` is no longer consulted by the DICOMweb data source): every DICOMweb
  // request (QIDO, WADO metadata, frames via the image loader's beforeSend, the whole-instance SEG
  // retrieve) takes its headers from userAuthenticationService.getAuthorizationHeader().
  // window.config may be a function, which appInit awaits with { servicesManager } before it
  // registers the services (synchronously, right after); so the service is caught as it is
  // registered (ServicesManager.registerService assigns services[name] = instance) and given a
  // static header before anything is fetched. The config keys are also copied onto the function,
  // because a few places read window.config.<key> directly (routerBasename, dataSources,
  // allowMultiSelectExport).
  var install = function (service) {
    service.setServiceImplementation({
      getAuthorizationHeader: function () {
        return { Authorization: AUTHORIZATION };
      },
    });
  };
  var withAuth = function (ctx) {
    var services = ctx.servicesManager.services;
    if (services.userAuthenticationService) {
      install(services.userAuthenticationService);
    } else {
      var current;
      Object.defineProperty(services, 'userAuthenticationService', {
        configurable: true,
        enumerable: true,
        get: function () {
          return current;
        },
        set: function (service) {
          current = service;
          if (service) install(service);
        },
      });
    }
    return config;
  };
  Object.keys(config).forEach(function (k) {
    if (k !== 'name') withAuth[k] = config[k]; // a function's own `name` is read-only
  });
  window.config = withAuth;
})();
