import { render } from 'preact';

import { App } from './App';
import { settings } from './lib/settings';
import { watchTheme } from './lib/theme';
import './styles.css';

watchTheme();
const setLanguage = () => {
  document.documentElement.lang = settings.get().language === 'zh' ? 'zh-CN' : 'en';
};
setLanguage();
settings.subscribe(setLanguage);
render(<App />, document.getElementById('app')!);
